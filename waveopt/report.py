"""Graph statistics (op counts, per-step MACs, parameters) and their comparison table.

MACs are counted from the graph, per Loop step and per batch element, for the
matrix ops inside Loop bodies (nested subgraphs of a body count as inside):

1. MatMul / MatMulInteger / QLinearMatMul / Gemm with a loop-invariant operand (an
   initializer, a Constant, an outer-scope value, or computed only from those) of
   static 2-D shape: its size, i.e. K * N per batch row (Gemm honours transA/transB).
2. Otherwise, when both operands have static inner dims: M * K * N times the batch
   dims, where a symbolic dim counts as 1 (it is taken to be the batch).
3. Conv / ConvTranspose with a static weight: weight size times the static spatial
   size of the output (Conv) or input (ConvTranspose).
4. GRU / LSTM / RNN: size of W plus size of R (times the sequence length when static,
   else one step).
Anything else that multiplies matrices is skipped and listed in ``unknown_mac_ops``.
Ops in subgraphs of a body (If branches, inner Loops) are counted once per step.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable

import onnx_ir as ir

from waveopt.graph import AnyModel, infer_shapes, iter_graphs, iter_nodes, to_proto

__all__ = ["GraphStats", "LoopInvariance", "counts_macs", "format_comparison", "format_stats", "graph_stats", "node_macs"]


@dataclasses.dataclass
class GraphStats:
    """What a model holds: ops outside / inside Loop bodies, per-step MACs, parameters."""

    ops_outside_loop: dict[str, int]
    ops_in_loop_body: dict[str, int]
    macs_per_step: int
    parameters: int
    file_size: int | None = None
    unknown_mac_ops: list[str] = dataclasses.field(default_factory=list)

    @property
    def n_ops_outside_loop(self) -> int:
        return sum(self.ops_outside_loop.values())

    @property
    def n_ops_in_loop_body(self) -> int:
        return sum(self.ops_in_loop_body.values())

    def as_dict(self) -> dict:
        """A JSON-ready dict, totals included."""
        return {
            **dataclasses.asdict(self),
            "n_ops_outside_loop": self.n_ops_outside_loop,
            "n_ops_in_loop_body": self.n_ops_in_loop_body,
        }


def graph_stats(model: AnyModel, file_size: int | None = None) -> GraphStats:
    """Collect :class:`GraphStats`; ``model`` is not modified."""
    proto = to_proto(model)
    # shapes make more MAC rules apply; a model that defeats inference still counts
    proto = infer_shapes(proto) or proto
    graph = ir.serde.deserialize_model(proto).graph

    outside: Counter[str] = Counter()
    inside: Counter[str] = Counter()
    for node, in_loop in iter_nodes(graph):
        (inside if in_loop else outside)[_op_name(node)] += 1

    macs = 0
    unknown: list[str] = []
    outer_loops = [n for n, in_loop in iter_nodes(graph) if _is_loop(n) and not in_loop]
    for loop in outer_loops:  # nested Loops are visited as part of their outer body
        body = loop.attributes["body"].as_graph()
        invariant = LoopInvariance(body)
        for node, _ in iter_nodes(body, in_loop=True):
            if not counts_macs(node):
                continue
            count = node_macs(node, invariant)
            if count is None:
                unknown.append(f"{node.op_type} ({node.name or node.outputs[0].name})")
            else:
                macs += count

    macs += sum(_fused_loop_macs(node) for node, _ in iter_nodes(graph) if node.domain == "waveopt.ops"
                and node.op_type == "WaveRNNLoop")

    return GraphStats(
        ops_outside_loop=dict(sorted(outside.items())),
        ops_in_loop_body=dict(sorted(inside.items())),
        macs_per_step=macs,
        parameters=_count_parameters(graph),
        file_size=file_size,
        unknown_mac_ops=unknown,
    )


def _op_name(node: ir.Node) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"


def _is_loop(node: ir.Node) -> bool:
    return node.op_type == "Loop" and node.domain in ("", "ai.onnx")


def _count_parameters(graph: ir.Graph) -> int:
    total = 0
    for g in iter_graphs(graph):
        for value in g.initializers.values():
            if value.const_value is not None and value.const_value.dtype != ir.DataType.STRING:
                total += value.const_value.size
        for node in g:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                total += _constant_size(node)
    return total


def _constant_size(node: ir.Node) -> int:
    for attr in node.attributes.values():
        if attr.type == ir.AttributeType.TENSOR:
            tensor = attr.as_tensor()
            return 0 if tensor.dtype == ir.DataType.STRING else tensor.size
        if attr.type in (ir.AttributeType.FLOAT, ir.AttributeType.INT):
            return 1
        if attr.type in (ir.AttributeType.FLOATS, ir.AttributeType.INTS):
            return len(attr.value)
        if attr.type == ir.AttributeType.SPARSE_TENSOR:
            return math.prod(attr.value.dims)
    return 0


def _fused_loop_macs(node: ir.Node) -> int:
    """waveopt.ops::WaveRNNLoop runs a whole loop: per step, its recurrent and dense
    matrices (W_hh1, W_x2, W_hh2, W_fc1, W_fc2, W_fc3) plus the rank-1 vectors u1..u3."""
    total = 0
    for index in (4, 5, 6, 7, 9, 10, 12, 13, 14):
        value = node.inputs[index] if index < len(node.inputs) else None
        if value is not None and value.shape is not None and all(isinstance(d, int) for d in value.shape):
            total += math.prod(value.shape)
    return total


def counts_macs(node: ir.Node) -> bool:
    """Whether the MAC rules cover this kind of op (matrix ops, Conv, RNNs)."""
    return node.domain in ("", "ai.onnx") and node.op_type in _MAC_RULES


def node_macs(node: ir.Node, invariant: "LoopInvariance") -> int | None:
    """MACs of one Loop-body node per step and batch row (rules 1-4); None when a rule
    covers the op but cannot count this node, 0 for ops no rule covers."""
    if not counts_macs(node):
        return 0
    return _MAC_RULES[node.op_type](node, invariant)


class LoopInvariance:
    """Decides whether a value is the same at every step of one Loop body."""

    def __init__(self, body: ir.Graph) -> None:
        self._per_step: set[ir.Value] = set()
        for g in iter_graphs(body):
            self._per_step.update(g.inputs)
        self._memo: dict[ir.Value, bool] = {}

    def __call__(self, value: ir.Value | None) -> bool:
        if value is None or value in self._per_step:
            return False
        if value.const_value is not None:
            return True
        if value not in self._memo:
            node = value.producer()
            self._memo[value] = node is None or (
                not any(True for _ in _subgraph_attrs(node))
                and all(self(v) for v in node.inputs if v is not None)
            )
        return self._memo[value]


def _subgraph_attrs(node: ir.Node):
    return (
        a for a in node.attributes.values()
        if a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
    )


def _dims(value: ir.Value | None) -> list[int | None] | None:
    """Static dims of ``value`` (None for a symbolic dim), or None if the rank is unknown."""
    if value is None:
        return None
    if value.shape is not None:
        return [d if isinstance(d, int) else None for d in value.shape]
    if value.const_value is not None:
        return list(value.const_value.shape)
    node = value.producer()
    if node is not None and node.op_type == "Constant" and "value" in node.attributes:
        return list(node.attributes["value"].as_tensor().shape)
    return None


def _prod_or_one(dims: list[int | None]) -> int:
    return math.prod(d if d is not None else 1 for d in dims)


def _matmul_macs(a: ir.Value | None, b: ir.Value | None, invariant: LoopInvariance,
                 trans_a: bool = False, trans_b: bool = False) -> int | None:
    a_dims, b_dims = _dims(a), _dims(b)
    if trans_a and a_dims is not None:
        a_dims = a_dims[:-2] + a_dims[-2:][::-1]
    if trans_b and b_dims is not None:
        b_dims = b_dims[:-2] + b_dims[-2:][::-1]
    if _is_static_weight(b, b_dims, invariant):
        return b_dims[0] * b_dims[1]  # rule 1: K * N per batch row
    if _is_static_weight(a, a_dims, invariant):
        return a_dims[0] * a_dims[1]  # rule 1, weight on the left: M * K per batch column
    if a_dims is None or b_dims is None or len(a_dims) < 1 or len(b_dims) < 2:
        return None
    k, n = a_dims[-1], b_dims[-1]
    if k is None or n is None:
        return None
    rows = _prod_or_one(a_dims[:-1])
    batch = _prod_or_one(b_dims[:-2]) if len(b_dims) > len(a_dims) else 1
    return rows * batch * k * n  # rule 2


def _is_static_weight(value: ir.Value | None, dims: list[int | None] | None,
                      invariant: LoopInvariance) -> bool:
    return dims is not None and len(dims) == 2 and None not in dims and invariant(value)


def _matmul_rule(a_index: int, b_index: int) -> Callable[[ir.Node, LoopInvariance], int | None]:
    def rule(node: ir.Node, invariant: LoopInvariance) -> int | None:
        inputs = node.inputs
        if len(inputs) <= max(a_index, b_index):
            return None
        return _matmul_macs(inputs[a_index], inputs[b_index], invariant)

    return rule


def _gemm_rule(node: ir.Node, invariant: LoopInvariance) -> int | None:
    trans_a = node.attributes.get_int("transA", 0) != 0
    trans_b = node.attributes.get_int("transB", 0) != 0
    return _matmul_macs(node.inputs[0], node.inputs[1], invariant, trans_a, trans_b)


def _conv_rule(node: ir.Node, invariant: LoopInvariance) -> int | None:
    w_dims = _dims(node.inputs[1])
    if not invariant(node.inputs[1]) or w_dims is None or None in w_dims:
        return None
    spatial_of = node.inputs[0] if node.op_type == "ConvTranspose" else node.outputs[0]
    dims = _dims(spatial_of)
    if dims is None or len(dims) < 3 or None in dims[2:]:
        return None
    return math.prod(w_dims) * math.prod(dims[2:])


def _rnn_rule(node: ir.Node, invariant: LoopInvariance) -> int | None:
    w_dims, r_dims = _dims(node.inputs[1]), _dims(node.inputs[2])
    if w_dims is None or r_dims is None or None in w_dims or None in r_dims:
        return None
    x_dims = _dims(node.inputs[0])
    seq_axis = 1 if node.attributes.get_int("layout", 0) else 0
    seq = x_dims[seq_axis] if x_dims is not None and len(x_dims) == 3 else None
    return (seq or 1) * (math.prod(w_dims) + math.prod(r_dims))


_MAC_RULES: dict[str, Callable[[ir.Node, LoopInvariance], int | None]] = {
    "MatMul": _matmul_rule(0, 1),
    "MatMulInteger": _matmul_rule(0, 1),
    "QLinearMatMul": _matmul_rule(0, 3),
    "Gemm": _gemm_rule,
    "Conv": _conv_rule,
    "ConvInteger": _conv_rule,
    "ConvTranspose": _conv_rule,
    "GRU": _rnn_rule,
    "LSTM": _rnn_rule,
    "RNN": _rnn_rule,
    "Einsum": lambda node, invariant: None,
}


def format_stats(stats: GraphStats, op_rows: bool = True) -> str:
    """One model's statistics as an aligned plain-text table (``op_rows``: a row per op type)."""
    rows = [(label, _fmt(value)) for label, value in _headline(stats)]
    if op_rows:
        rows += [(f"  {op} (outside loop)", _fmt(n)) for op, n in stats.ops_outside_loop.items()]
        rows += [(f"  {op} (loop body)", _fmt(n)) for op, n in stats.ops_in_loop_body.items()]
    if stats.unknown_mac_ops:
        rows.append(("MACs not counted", ", ".join(stats.unknown_mac_ops)))
    return _table([("", "value"), *rows])


def format_comparison(before: GraphStats, after: GraphStats) -> str:
    """Before / after / change table; op types whose counts changed get their own rows."""
    rows = [("", "before", "after", "change")]
    for (label, b), (_, a) in zip(_headline(before), _headline(after)):
        rows.append((label, _fmt(b), _fmt(a), _change(b, a)))
    for where, b_ops, a_ops in (
        ("outside loop", before.ops_outside_loop, after.ops_outside_loop),
        ("loop body", before.ops_in_loop_body, after.ops_in_loop_body),
    ):
        for op in sorted(set(b_ops) | set(a_ops)):
            b, a = b_ops.get(op, 0), a_ops.get(op, 0)
            if b != a:
                rows.append((f"  {op} ({where})", _fmt(b), _fmt(a), _change(b, a)))
    return _table(rows)


def _headline(stats: GraphStats) -> list[tuple[str, int | None]]:
    return [
        ("ops outside loop", stats.n_ops_outside_loop),
        ("ops inside loop body", stats.n_ops_in_loop_body),
        ("per-step MACs", stats.macs_per_step),
        ("parameters", stats.parameters),
        ("file size (bytes)", stats.file_size),
    ]


def _fmt(value: int | None) -> str:
    return "n/a" if value is None else f"{value:,}"


def _change(before: int | None, after: int | None) -> str:
    if before is None or after is None:
        return "n/a"
    delta = after - before
    if delta == 0:
        return "0"
    ratio = delta / before if before else 0.0
    percent = "" if not before else (
        f" ({ratio:+.1%})" if abs(ratio) >= 0.001 else f" ({ratio * 100:+.2g}%)")
    return f"{delta:+,}{percent}"


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
