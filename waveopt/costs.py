"""waveopt's one cost model: multiply-accumulates and weight bytes of every node.

``optimize``'s table, ``bench`` and ``profile`` all count with this module, so they agree.

Loop bodies, per Loop step and batch row (= per generated sample), ``loop_step_macs``:

1. MatMul / MatMulInteger / QLinearMatMul / Gemm with a loop-invariant operand (an
   initializer, a Constant, an outer-scope value, or computed only from those, e.g. by
   Slice/Concat of outer weights) of static 2-D shape: its size, K * N per batch row.
2. Otherwise, when both operands have static inner dims: M * K * N times the batch dims,
   where a symbolic dim counts as 1 (it is taken to be the batch).
3. Conv / ConvTranspose with a static weight: weight size times the static spatial size.
4. GRU / LSTM / RNN: gates x hidden x (input + hidden) per direction and sequence step,
   from W and R's shapes, else from ``hidden_size`` and the input's width (weights
   computed inside the body from outer-scope weights often have no inferred shape).

waveopt's native ops (``waveopt.ops``), from their inputs and attributes:

5. ``WaveRNNLoop``, per step and sequence, split by the module each product belongs to:
   rnn1 = u1 + W_hh1, rnn2 = u2 + W_x2 + W_hh2, fc1 = u3 + W_fc1, fc2 = W_fc2, fc3 = W_fc3
   (``u`` the rank-1 terms of the fed-back sample); at run shapes times steps x sequences.
6. ``FusedDense`` ``act(concat(x_1..x_m) · W + b)``: size of W per row of x; at run shapes
   times the rows (all dims of x_1 but the last).

Main graph at the shapes a run has (``main_graph_macs``): MatMul / Gemm output size x inner
dim, Conv weight size x output positions (ConvTranspose: input positions), rules 5 and 6.

Weight bytes: the constant tensors (initializers, Constants) a node reads; a native op with
``quant`` int8 / int16 reads its matrices at 1 / 2 bytes per weight (packed at creation).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import onnx
import onnx_ir as ir

from waveopt.graph import infer_shapes, iter_graphs
from waveopt.native_library import DOMAIN

__all__ = ["Cost", "LoopInvariance", "ModuleCost", "counts_macs", "fused_dense_row", "loop_step_macs",
           "main_graph_macs", "module_costs", "node_macs", "per_sample_costs", "wavernn_loop_step"]

@dataclasses.dataclass
class Cost:
    """MACs (per the caller's unit) and the bytes of the weights read for them."""

    macs: float = 0.0
    weight_bytes: int = 0


def counts_macs(node: ir.Node) -> bool:
    """Whether the MAC rules cover this kind of op (matrix ops, Conv, RNNs)."""
    return node.domain in ("", "ai.onnx") and node.op_type in _MAC_RULES


def node_macs(node: ir.Node, invariant: "LoopInvariance") -> int | None:
    """MACs of one Loop-body node per step and batch row (rules 1-4); None when a rule
    covers the op but cannot count this node, 0 for ops no rule covers."""
    if not counts_macs(node):
        return 0
    return _MAC_RULES[node.op_type](node, invariant)


def loop_step_macs(node: ir.Node, invariant: "LoopInvariance") -> int | None:
    """MACs of one Loop-body node per step and batch row: rules 1-4, and 5-6 for a native
    op inside a body; None when a rule covers the op but cannot count this node."""
    if is_native(node, "WaveRNNLoop"):
        return int(sum(c.macs for c in wavernn_loop_step(node).values()))
    if is_native(node, "FusedDense"):
        return int(fused_dense_row(node).macs)
    return node_macs(node, invariant)


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


_GATES = {"GRU": 3, "LSTM": 4, "RNN": 1}


def _rnn_rule(node: ir.Node, invariant: LoopInvariance) -> int | None:
    """Rule 4: (size of W + size of R) per sequence step, from their shapes or, when those are
    not known (weights computed in the body), from hidden_size and the input's width."""
    x_dims = _dims(node.inputs[0])
    seq_axis = 1 if node.attributes.get_int("layout", 0) else 0
    seq = x_dims[seq_axis] if x_dims is not None and len(x_dims) == 3 else None
    w_dims, r_dims = _dims(_input(node, 1)), _dims(_input(node, 2))
    if w_dims is not None and r_dims is not None and None not in w_dims and None not in r_dims:
        return (seq or 1) * (math.prod(w_dims) + math.prod(r_dims))
    hidden = node.attributes.get_int("hidden_size", 0)
    width = x_dims[-1] if x_dims else None
    if w_dims is not None and len(w_dims) == 3 and w_dims[2] is not None:
        width = w_dims[2]
    if not hidden or width is None:
        return None
    directions = 2 if node.attributes.get_string("direction", "forward") == "bidirectional" else 1
    return (seq or 1) * directions * _GATES[node.op_type] * hidden * (width + hidden)


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


@dataclasses.dataclass
class ModuleCost:
    macs_per_sample: float = 0.0
    weight_bytes: int = 0  # distinct weights the module reads (step and main graph)
    weight_bytes_per_sample: float = 0.0
    uncounted: list[str] = dataclasses.field(default_factory=list)  # matrix ops no rule could count


def module_costs(model: onnx.ModelProto, labels: dict[str, str] | None, feed_shapes: dict[str, list[int]],
                 samples_per_run: int, sequences: int,
                 runtime_shapes: dict[str, tuple[list, list]] | None = None) -> dict[str, ModuleCost]:
    """Per-module costs per generated sample of a run fed arrays of ``feed_shapes``.

    ``labels`` maps node names (unique) to modules; None puts every node under ``"model"``.
    A ``WaveRNNLoop``'s products go to the modules they compute (rnn1, ..., fc3), per step
    and sequence. ``runtime_shapes``: node name -> (input shapes, output shapes) as ORT ran
    them; for a main-graph node that kept its name they win over the inferred ones.
    """
    runtime_shapes = runtime_shapes or {}
    if labels is None:
        labels = _Everything()
    graph = ir.serde.deserialize_model(_with_shapes(model, feed_shapes)).graph
    costs: dict[str, ModuleCost] = {}
    seen_weights: dict[str, set[int]] = {}

    def add_weights(module: str, node: ir.Node, per: float) -> None:
        cost = costs.setdefault(module, ModuleCost())
        for value in node.inputs:
            nbytes = _constant_bytes(value)
            if nbytes and id(value) not in seen_weights.setdefault(module, set()):
                seen_weights[module].add(id(value))
                cost.weight_bytes += nbytes
                cost.weight_bytes_per_sample += nbytes / per

    for node in graph:
        module = labels.get(node.name)
        if module is None:
            continue
        if node.op_type == "Loop" and node.domain in ("", "ai.onnx"):
            _count_body(node.attributes["body"].as_graph(), labels, costs, add_weights, sequences)
            continue
        if is_native(node, "WaveRNNLoop"):  # its products go to the modules they compute
            for stage, step in wavernn_loop_step(node).items():
                cost = costs.setdefault(module if isinstance(labels, _Everything) else stage, ModuleCost())
                cost.macs_per_sample += step.macs
                cost.weight_bytes += step.weight_bytes
                cost.weight_bytes_per_sample += step.weight_bytes / sequences
            continue
        cost = costs.setdefault(module, ModuleCost())
        macs = main_graph_macs(node, runtime_shapes.get(node.name), step_rows=samples_per_run)
        if macs is None:
            cost.uncounted.append(f"{node.op_type} ({node.name})")
        else:
            cost.macs_per_sample += macs / samples_per_run
        add_weights(module, node, samples_per_run)
    return costs


def _count_body(body: ir.Graph, labels, costs, add_weights, sequences: int) -> None:
    invariant = LoopInvariance(body)
    for node in ir.traversal.RecursiveGraphIterator(body):
        module = labels.get(node.name)
        if module is None:
            continue
        cost = costs.setdefault(module, ModuleCost())
        macs = loop_step_macs(node, invariant)
        if macs is None:
            cost.uncounted.append(f"{node.op_type} ({node.name})")
        else:
            cost.macs_per_sample += macs
        add_weights(module, node, sequences)


class _Everything(dict):
    """Labels that put every node under one module, ``"model"``."""

    def get(self, key, default=None):
        return "model"


def per_sample_costs(model: onnx.ModelProto, feed_shapes: dict[str, list[int]], samples_per_run: int,
                     sequences: int) -> ModuleCost:
    """The whole model's MACs and weight bytes per generated sample (``module_costs`` summed)."""
    return module_costs(model, None, feed_shapes, samples_per_run, sequences).get("model", ModuleCost())


# --- waveopt's native ops (rules 5 and 6) ---------------------------------------------------
# WaveRNNLoop inputs: 0-3 per-step projections, 4-6 u1..u3, 7 W_hh1, 8 b_hh1, 9 W_x2, 10 W_hh2,
# 11 b_hh2, 12 W_fc1, 13 W_fc2, 14 W_fc3, 15 b_fc3, 16 noise (or previous samples).
_LOOP_MODULES = {"rnn1": ((4, 7), (8,)), "rnn2": ((5, 9, 10), (11,)), "fc1": ((6, 12), ()),
                 "fc2": ((13,), ()), "fc3": ((14,), (15,))}
_QUANT_BYTES = {"int8": 1, "int16": 2}


def is_native(node: ir.Node, op_type: str) -> bool:
    return node.domain == DOMAIN and node.op_type == op_type


def wavernn_loop_step(node: ir.Node) -> dict[str, Cost]:
    """Rule 5: {module: MACs and weight bytes per step and sequence} of a ``WaveRNNLoop``."""
    weight_size = _quant_bytes(node)
    costs = {}
    for module, (products, biases) in _LOOP_MODULES.items():
        cost = Cost()
        for index in products:
            size = _size(_input(node, index))
            cost.macs += size
            cost.weight_bytes += size * (weight_size if index > 6 else 4)  # u1..u3 stay float
        cost.weight_bytes += sum(4 * _size(_input(node, i)) for i in biases)
        costs[module] = cost
    return costs


def fused_dense_row(node: ir.Node) -> Cost:
    """Rule 6: MACs and weight bytes per row of a ``FusedDense`` (W is [sum of K_i, N])."""
    weight, bias = _input(node, len(node.inputs) - 2), _input(node, len(node.inputs) - 1)
    size = _size(weight)
    return Cost(size, size * _quant_bytes(node) + 4 * _size(bias))


def _quant_bytes(node: ir.Node) -> int:
    attr = node.attributes.get("quant")
    return _QUANT_BYTES.get(attr.as_string() if attr is not None else "", 4)


def _input(node: ir.Node, index: int) -> ir.Value | None:
    return node.inputs[index] if index < len(node.inputs) else None


def _size(value: ir.Value | None) -> int:
    dims = _dims(value)
    return math.prod(dims) if dims is not None and None not in dims else 0


def _with_shapes(model: onnx.ModelProto, feed_shapes: dict[str, list[int]]) -> onnx.ModelProto:
    """``model`` with its inputs fixed to the fed shapes, shapes inferred where onnx can."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for value in model.graph.input:
        shape = feed_shapes.get(value.name)
        if shape is None or not value.type.HasField("tensor_type"):
            continue
        dims = value.type.tensor_type.shape.dim
        del dims[:]
        for size in shape:
            dims.add().dim_value = int(size)
    # a model that defeats inference still gets the rules that need no shapes
    return infer_shapes(model) or model


def _static(value: ir.Value | None) -> list[int] | None:
    if value is None or value.shape is None or not all(isinstance(d, int) for d in value.shape):
        return None
    return list(value.shape)


def main_graph_macs(node: ir.Node, ran: tuple[list, list] | None = None, step_rows: int | None = None) -> int | None:
    """MACs of one main-graph node at the shapes it ran with (else inferred); 0 for ops that
    multiply no matrices. A product of a static 2-D weight (or a FusedDense) whose input rows
    are not known without running counts ``step_rows`` rows: the projections hoisted out of
    the loop or fused for it run over the loop's steps x sequences."""
    op = node.op_type if node.domain in ("", "ai.onnx") else None

    def shape(index: int, outputs: bool = False) -> list[int] | None:
        side = ran[1 if outputs else 0] if ran is not None else []
        if index < len(side) and side[index]:
            return list(side[index])
        values = node.outputs if outputs else node.inputs
        return _static(values[index]) if index < len(values) else None

    if op in ("MatMul", "MatMulInteger", "Gemm"):
        a, out = shape(0), shape(0, outputs=True)
        weight = _dims(_input(node, 1))
        if (a is None or out is None) and step_rows and weight is not None and len(weight) == 2 \
                and None not in weight and not node.attributes.get_int("transA", 0):
            return step_rows * math.prod(weight)
        if a is None or out is None:
            return None
        trans_a = op == "Gemm" and node.attributes.get_int("transA", 0)
        inner = a[-2] if trans_a else a[-1]
        return math.prod(out) * inner
    if op in ("Conv", "ConvInteger", "ConvTranspose"):
        weight = _static(node.inputs[1])
        positions = shape(0) if op == "ConvTranspose" else shape(0, outputs=True)
        if weight is None or positions is None:
            return None
        return math.prod(weight) * positions[0] * math.prod(positions[2:])
    if is_native(node, "FusedDense"):
        x = shape(0)
        rows = math.prod(x[:-1]) if x is not None else step_rows
        return None if rows is None else int(fused_dense_row(node).macs) * rows
    if is_native(node, "WaveRNNLoop"):
        projection = shape(0)  # [steps, sequences, 3H]
        if projection is None:
            return None
        return int(sum(c.macs for c in wavernn_loop_step(node).values())) * math.prod(projection[:2])
    if counts_macs(node) or (node.domain not in ("", "ai.onnx") and "MatMul" in node.op_type):
        return None  # GRU, Einsum, ...: not counted outside a Loop
    return 0


def _constant_bytes(value: ir.Value | None) -> int:
    if value is None:
        return 0
    if value.const_value is not None:
        return int(value.const_value.nbytes)
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant" and "value" in producer.attributes:
        tensor = producer.attributes["value"].as_tensor()
        return int(np.prod(tensor.shape, dtype=np.int64)) * tensor.dtype.itemsize
    return 0
