"""The feature axes of one Loop body: which values have one and how the ops tie them together.

A value is *tracked* when its last (feature) axis has a static width. An op is *modeled*
when what it does to that axis is known:

- same layout in and out: Relu, Tanh, Sigmoid, Identity, Neg; Add/Sub/Mul between operands
  of the output's width (a scalar or width-1 operand *broadcasts*); Gather along another
  axis; Gemm's C; a loop-carried state (body input k and body output k);
- parts of a whole: Concat, Split and Slice (step 1) along the last axis;
- Gemm (transA = 0) and MatMul by a constant 2-D float32 weight: input K and output N.

Split points and Concat boundaries *cut* the axes into segments, propagated until every
layout relation agrees; segments tied by a relation form one *group* (a union-find), e.g.
a GRU's state, each of its gate blocks and the residual stream are one group of width H.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import onnx_ir as ir

from waveopt.graph import infer_shapes, iter_graphs, iter_proto_graphs
from waveopt.passes._ir import const_array, int_list, is_default_domain

_UNARY = {"Relu", "Tanh", "Sigmoid", "Identity", "Neg"}
_BINARY = {"Add", "Sub", "Mul"}


def shape_hints(model: ir.Model) -> dict[str, list]:
    """name -> dims (None where not static) by onnx shape inference on a copy of ``model``."""
    proto = infer_shapes(ir.serde.serialize_model(model))
    if proto is None:
        return {}
    hints: dict[str, list] = {}
    for graph in iter_proto_graphs(proto.graph):
        for vi in [*graph.value_info, *graph.input, *graph.output]:
            t = vi.type.tensor_type
            if t.HasField("shape"):
                hints[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    return hints


@dataclasses.dataclass
class Axis:
    """A tracked value's rank, the width of its last axis and the cuts in that axis."""

    rank: int
    width: int
    cuts: set[int] = dataclasses.field(default_factory=set)

    def segments(self) -> list[tuple[int, int]]:
        """[(start, width)] between the cuts."""
        edges = [0, *sorted(self.cuts), self.width]
        return [(a, b - a) for a, b in zip(edges, edges[1:])]


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict = {}

    def find(self, x):
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a, b) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb


class LoopFeatures:
    """The analysis of ``loop``'s body. Segments are keyed ``(value, index)``."""

    def __init__(self, loop: ir.Node, hints: dict[str, list]) -> None:
        self.loop, self.hints = loop, hints
        self.body = loop.attributes["body"].as_graph()
        self.inner = set(iter_graphs(self.body))
        self.n_carried = len(loop.inputs) - 2
        self.carried_in = list(self.body.inputs[2:2 + self.n_carried])
        self.axes: dict[ir.Value, Axis] = {}
        self.same: list[tuple[ir.Value, ir.Value]] = []
        self.part: list[tuple[ir.Value, ir.Value, int, ir.Node]] = []  # (whole, piece, offset, node)
        self.feature_uses: set[tuple[ir.Node, int]] = set()  # (node, input index)
        self.broadcast: dict[tuple[ir.Node, int], ir.Value] = {}
        self.modeled: set[ir.Node] = set()
        self.matmuls: list[ir.Node] = []
        self._mismatched: set[ir.Value] = set()
        self._model_body()
        self._propagate_cuts()
        self._uf = _UnionFind()
        self._group_segments()
        self.members: dict = {}
        for key in list(self._uf.parent):
            self.members.setdefault(self._uf.find(key), []).append(key)

    # --- queries ------------------------------------------------------------------------------
    def segments(self, value: ir.Value) -> list[tuple[int, int]]:
        return self.axes[value].segments()

    def group(self, value: ir.Value, index: int):
        return self._uf.find((value, index))

    def groups_of(self, value: ir.Value) -> list:
        return [self.group(value, i) for i in range(len(self.segments(value)))]

    def group_width(self, group) -> int:
        value, index = self.members[group][0]
        return self.segments(value)[index][1]

    def in_body(self, value: ir.Value) -> bool:
        return value.graph is self.body

    def hidden_groups(self) -> set:
        """Groups holding the output (N) of a modeled matmul."""
        return {g for mm in self.matmuls for g in self.groups_of(mm.outputs[0])}

    def blocked_groups(self) -> dict:
        """group -> why, for groups with a value whose layout cannot change."""
        blocked: dict = {}
        for value, why in self._escapes():
            for g in self.groups_of(value):
                blocked.setdefault(g, why)
        return blocked

    def per_step(self, group) -> bool:
        """Whether a value of ``group`` is made in the body by an op that is not modeled
        (padding it costs an op per step; values from outside are padded once)."""
        return any(self.in_body(v) and v not in self.carried_in and v.producer() not in self.modeled
                   and const_array(v) is None for v, _ in self.members[group])

    def segment_at(self, value: ir.Value, offset: int) -> int:
        """The index of the segment of ``value`` that starts at ``offset``."""
        return [s for s, _ in self.segments(value)].index(offset)

    def part_offset(self, whole: ir.Value, piece: ir.Value) -> int:
        return next(o for w, p, o, _ in self.part if w is whole and p is piece)

    def _escapes(self) -> Iterator[tuple[ir.Value, str]]:
        body_outputs = set(self.body.outputs[1:])
        for value in self.axes:
            if value in self._mismatched:
                yield value, "carried with a different shape"
                continue
            for node, index in value.uses():
                if node.graph in self.inner and node.graph is not self.body:
                    yield value, "read in a nested graph"
                    break
                if node.graph is self.body and (node, index) not in self.feature_uses:
                    yield value, "broadcast" if (node, index) in self.broadcast else f"read by {node.op_type}"
                    break
            else:
                if value in body_outputs and not self.in_body(value):
                    yield value, "passed through the body"

    # --- value facts --------------------------------------------------------------------------
    def _dims(self, value: ir.Value) -> list[int | None] | None:
        """Static dims from the value's shape or shape inference; for an Unsqueeze by
        constant axes (which inference misses inside bodies), from its input."""
        if value.shape is not None:
            return [d if isinstance(d, int) else None for d in value.shape]
        if value.name in self.hints:
            return self.hints[value.name]
        node = value.producer()
        if node is not None and node.op_type == "Unsqueeze" and is_default_domain(node) and len(node.inputs) == 2:
            axes = int_list(node.inputs[1])
            dims = self._dims(node.inputs[0]) if node.inputs[0] is not None else None
            if axes is not None and dims is not None:
                rank = len(dims) + len(axes)
                axes = {a % rank for a in axes}
                rest = iter(dims)
                return [1 if i in axes else next(rest) for i in range(rank)]
        return None

    def _lookup(self, value: ir.Value | None) -> tuple[int, int | None] | None:
        """(rank, static last dim or None) of a float value, else None."""
        if value is None or value.dtype not in (None, ir.DataType.FLOAT):
            return None
        array = const_array(value)
        if array is not None:
            return (array.ndim, array.shape[-1] if array.ndim else None) if array.dtype == np.float32 else None
        dims = self._dims(value)
        return None if dims is None else (len(dims), dims[-1] if dims else None)

    def _rank(self, value: ir.Value | None) -> int | None:
        if value is None:
            return None
        array = const_array(value)
        if array is not None:
            return array.ndim
        dims = self._dims(value)
        return None if dims is None else len(dims)

    def _track(self, value: ir.Value | None, rank: int | None = None, width: int | None = None) -> Axis | None:
        """The value's Axis; ``rank``/``width`` are what a modeled producer implies."""
        if value is None:
            return None
        if value in self.axes:
            return self.axes[value]
        found = self._lookup(value)
        if found is not None:
            rank, width = found[0], found[1] if found[1] is not None else width
        elif not (self.in_body(value) and value.producer() is not None):
            return None
        if rank is None or rank < 1 or width is None or width < 1:
            return None
        self.axes[value] = Axis(rank, width)
        return self.axes[value]

    def _is_broadcast(self, value: ir.Value, width: int) -> bool:
        found = self._lookup(value)
        return found is not None and (found[0] == 0 or found[1] == 1 and width != 1)

    # --- modeling -----------------------------------------------------------------------------
    def _model_body(self) -> None:
        carried_out = list(self.body.outputs[1:1 + self.n_carried])
        for value in self.carried_in:
            self._track(value)
        for node in self.body:
            marks = len(self.same), len(self.part)
            if is_default_domain(node) and self._model(node):
                self.modeled.add(node)
            else:  # forget what a node that turned out not to be modeled had recorded
                del self.same[marks[0]:], self.part[marks[1]:]
                self.feature_uses -= {(node, i) for i in range(len(node.inputs))}
                for i in range(len(node.inputs)):
                    self.broadcast.pop((node, i), None)
        for v_in, v_out in zip(self.carried_in, carried_out):
            a, b = self.axes.get(v_in), self._track(v_out)
            if a is None and b is None:
                continue
            if a is None or b is None or (a.rank, a.width) != (b.rank, b.width):
                self._mismatched.update(v for v in (v_in, v_out) if v in self.axes)
            else:
                self.same.append((v_in, v_out))
        for value in self.body.outputs[1 + self.n_carried:]:
            self._track(value)

    def _model(self, node: ir.Node) -> bool:
        if any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for a in node.attributes.values()):
            return False
        op = node.op_type
        if op in _UNARY and len(node.inputs) == 1:
            return self._model_same(node, 0, node.outputs[0], lambda a: (a.rank, a.width))
        if op in _BINARY and len(node.inputs) == 2:
            return self._model_binary(node)
        if op in ("Gemm", "MatMul"):
            return self._model_matmul(node)
        if op == "Concat":
            return self._model_concat(node)
        if op == "Split":
            return self._model_split(node)
        if op == "Slice":
            return self._model_slice(node)
        if op == "Gather" and len(node.inputs) == 2:
            indices = self._rank(node.inputs[1])
            a = self._track(node.inputs[0])
            if indices is None or a is None or node.attributes.get_int("axis", 0) % a.rank == a.rank - 1:
                return False
            return self._model_same(node, 0, node.outputs[0], lambda a: (a.rank - 1 + indices, a.width))
        return False

    def _model_same(self, node: ir.Node, index: int, out: ir.Value, implied) -> bool:
        a = self._track(node.inputs[index])
        if a is None:
            return False
        rank, width = implied(a)
        b = self._track(out, rank, width)
        if b is None or b.width != a.width:
            return False
        self.same.append((node.inputs[index], out))
        self.feature_uses.add((node, index))
        return True

    def _model_binary(self, node: ir.Node) -> bool:
        axes = [self._track(v) for v in node.inputs]
        known = [a for a in axes if a is not None]
        if not known or any(self._lookup(v) is None for v, a in zip(node.inputs, axes) if a is None):
            return False  # an operand of unknown rank
        width, rank = max(a.width for a in known), max(a.rank for a in known)
        out = self._track(node.outputs[0], rank, width)
        if out is None or out.width != width:
            return False
        for i, (value, a) in enumerate(zip(node.inputs, axes)):
            if a is not None and a.width == width and a.rank <= out.rank:
                self.same.append((value, node.outputs[0]))
                self.feature_uses.add((node, i))
            elif self._is_broadcast(value, width):
                self.broadcast[(node, i)] = value
            else:
                return False
        return True

    def _model_matmul(self, node: ir.Node) -> bool:
        ins = node.inputs
        weight = const_array(ins[1]) if len(ins) > 1 else None
        if weight is None or weight.ndim != 2 or weight.dtype != np.float32:
            return False
        k, n = weight.shape
        if node.op_type == "Gemm":
            if node.attributes.get_int("transA", 0):
                return False
            if node.attributes.get_int("transB", 0):
                k, n = n, k
        a = self._track(ins[0])
        if a is None or a.width != k or (node.op_type == "Gemm" and a.rank != 2):
            return False
        out = self._track(node.outputs[0], a.rank, n)
        if out is None or out.width != n:
            return False
        c = ins[2] if node.op_type == "Gemm" and len(ins) > 2 else None
        if c is not None:
            axis = self._track(c)
            if axis is not None and axis.width == n:
                self.same.append((c, node.outputs[0]))
                self.feature_uses.add((node, 2))
            elif self._is_broadcast(c, n):
                self.broadcast[(node, 2)] = c
            else:
                return False
        self.feature_uses.add((node, 0))
        self.matmuls.append(node)
        return True

    def _model_concat(self, node: ir.Node) -> bool:
        ins, out_value = node.inputs, node.outputs[0]
        axes = [self._track(v) for v in ins]
        out = self._lookup(out_value)
        if len(ins) > 1 and axes.count(None) == 1 and out is not None and out[1] is not None:
            # one input whose shape inference missed: the output's width minus the others'
            missing = axes.index(None)
            axes[missing] = self._track(ins[missing], out[0], out[1] - sum(a.width for a in axes if a))
        if not axes or None in axes or len({a.rank for a in axes}) != 1:
            return False
        rank, width = axes[0].rank, sum(a.width for a in axes)
        if node.attributes.get_int("axis", 0) % rank != rank - 1:
            return False
        b = self._track(out_value, rank, width)
        if b is None or b.width != width:
            return False
        offset = 0
        for i, (value, a) in enumerate(zip(ins, axes)):
            self.part.append((out_value, value, offset, node))
            self.feature_uses.add((node, i))
            offset += a.width
        return True

    def _model_split(self, node: ir.Node) -> bool:
        a = self._track(node.inputs[0])
        if a is None or node.attributes.get_int("axis", 0) % a.rank != a.rank - 1:
            return False
        n_out = len(node.outputs)
        if len(node.inputs) > 1 and node.inputs[1] is not None:
            sizes = int_list(node.inputs[1])
        elif a.width % n_out == 0:
            sizes = [a.width // n_out] * n_out
        else:
            return False  # opset 18's uneven num_outputs split: not modeled
        if sizes is None or len(sizes) != n_out or sum(sizes) != a.width:
            return False
        offset = 0
        for out, size in zip(node.outputs, sizes):
            b = self._track(out, a.rank, size)
            if b is None or b.width != size:
                return False
            self.part.append((node.inputs[0], out, offset, node))
            offset += size
        self.feature_uses.add((node, 0))
        return True

    def _model_slice(self, node: ir.Node) -> bool:
        ins = node.inputs
        a = self._track(ins[0])
        if a is None or len(ins) < 3:
            return False
        starts, ends = int_list(ins[1]), int_list(ins[2])
        axes = int_list(ins[3]) if len(ins) > 3 and ins[3] is not None else [0]
        steps = int_list(ins[4]) if len(ins) > 4 and ins[4] is not None else [1]
        if None in (starts, ends, axes, steps) or len(starts) != 1 or len(axes) != 1 or steps != [1]:
            return False
        if axes[0] % a.rank != a.rank - 1:
            return False
        start, end = (max(0, min(a.width, s + a.width if s < 0 else s)) for s in (starts[0], ends[0]))
        b = self._track(node.outputs[0], a.rank, end - start) if end > start else None
        if b is None or b.width != end - start:
            return False
        self.part.append((ins[0], node.outputs[0], start, node))
        self.feature_uses.add((node, 0))
        return True

    # --- cuts and groups ----------------------------------------------------------------------
    def _propagate_cuts(self) -> None:
        changed = True
        while changed:
            changed = False
            for a, b in self.same:
                ca, cb = self.axes[a].cuts, self.axes[b].cuts
                if ca != cb:
                    ca |= cb
                    cb |= ca
                    changed = True
            for whole, piece, offset, _ in self.part:
                cw, cp = self.axes[whole].cuts, self.axes[piece].cuts
                total, width = self.axes[whole].width, self.axes[piece].width
                to_whole = {offset + c for c in cp} | {e for e in (offset, offset + width) if 0 < e < total}
                to_piece = {c - offset for c in cw if offset < c < offset + width}
                if not to_whole <= cw or not to_piece <= cp:
                    cw |= to_whole
                    cp |= to_piece
                    changed = True

    def _group_segments(self) -> None:
        for value, axis in self.axes.items():
            for i in range(len(axis.segments())):
                self._uf.find((value, i))
        for a, b in self.same:
            for i in range(len(self.segments(a))):
                self._uf.union((a, i), (b, i))
        for whole, piece, offset, _ in self.part:
            first = self.segment_at(whole, offset)
            for i in range(len(self.segments(piece))):
                self._uf.union((piece, i), (whole, first + i))
