"""Graph statistics (op counts, MACs, parameters) and their comparison table.

MACs come from :mod:`waveopt.costs`, the cost model ``profile`` and ``bench`` use too:

- ``per-step MACs``: the sequential loop, per step and batch row: the matrix ops of Loop
  bodies (nested subgraphs counted once per step) and a fused ``WaveRNNLoop``'s recurrence.
  Anything that multiplies matrices but no rule can count is listed in ``unknown_mac_ops``.
- ``MACs/sample, whole model``: everything a waveopt WaveRNN export computes per generated
  sample in a run of ``frames`` mel frames: conditioning, the projections hoisted out of
  the loop or fused into ``FusedDense``, and the loop. Passes that hoist work out of the
  loop lower the first and may raise the second; ``profile`` at the same frames gives the
  same total.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import onnx_ir as ir

from waveopt.costs import LoopInvariance, is_native, loop_step_macs, per_sample_costs, wavernn_loop_step
from waveopt.graph import AnyModel, infer_shapes, iter_graphs, iter_nodes, to_proto
from waveopt.model_info import wavernn_info

__all__ = ["GraphStats", "format_comparison", "format_stats", "graph_stats"]


@dataclasses.dataclass
class GraphStats:
    """What a model holds: ops outside / inside Loop bodies, per-step MACs, parameters."""

    ops_outside_loop: dict[str, int]
    ops_in_loop_body: dict[str, int]
    macs_per_step: int
    parameters: int
    file_size: int | None = None
    unknown_mac_ops: list[str] = dataclasses.field(default_factory=list)
    # Everything the model computes per generated sample (conditioning, hoisted and fused
    # projections, the loop) for a run of ``frames`` mel frames; None for a foreign model.
    macs_per_sample: float | None = None
    frames: int | None = None

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


def graph_stats(model: AnyModel, file_size: int | None = None, frames: int | None = 8, batch: int = 1) -> GraphStats:
    """Collect :class:`GraphStats`; ``model`` is not modified. For a waveopt WaveRNN export
    (any form) also the whole model's MACs per sample in a run of ``frames`` mel frames
    (``waveopt.costs``, the numbers ``profile`` gives); ``frames=None`` skips that."""
    proto = to_proto(model)
    whole = _whole_model_macs(proto, frames, batch) if frames else None
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
            count = loop_step_macs(node, invariant)
            if count is None:
                unknown.append(f"{node.op_type} ({node.name or node.outputs[0].name})")
            else:
                macs += count
    # The fused loop's recurrence; its per-step input projections (FusedDense) run before
    # it, over all steps at once, and count in macs_per_sample.
    macs += sum(int(c.macs) for node in graph if is_native(node, "WaveRNNLoop")
                for c in wavernn_loop_step(node).values())

    return GraphStats(
        ops_outside_loop=dict(sorted(outside.items())),
        ops_in_loop_body=dict(sorted(inside.items())),
        macs_per_step=macs,
        parameters=_count_parameters(graph),
        file_size=file_size,
        unknown_mac_ops=unknown,
        macs_per_sample=whole,
        frames=frames if whole is not None else None,
    )


def _whole_model_macs(proto, frames: int, batch: int) -> float | None:
    info = wavernn_info(proto)
    if info is None:
        return None
    batch = 1 if info.fold is not None else batch
    steps, sequences = info.loop_shape(frames, batch)
    driver = ("prev_samples", [steps, sequences]) if info.teacher_forced else ("noise", [steps, sequences, 2])
    feed = {"mels": [batch, info.feat_dims, frames], driver[0]: driver[1]}
    cost = per_sample_costs(proto, feed, steps * sequences, sequences)
    return None if cost.uncounted else cost.macs_per_sample


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
        *([(f"MACs/sample, whole model ({stats.frames} frames)", round(stats.macs_per_sample))]
          if stats.macs_per_sample is not None else []),
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
