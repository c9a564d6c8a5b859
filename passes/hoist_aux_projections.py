"""Loop-invariant code motion: compute, before a Loop, what its body computes from the step index alone.

Before (Loop body, t = the iteration number)::

    aux_t = Gather(aux_seq, t)                # aux_seq: [T, B, A], outer scope
    a2    = Slice(aux_t, [8], [16], [-1])
    p     = Add(MatMul(a2, W), b)             # [B, N], the same whatever the loop state
    y     = Add(Gemm(x, U), p)                # x: loop-carried

After::

    P = Add(MatMul(Slice(aux_seq, [8], [16], [-1]), W), b)     # before the Loop: [T, B, N], one GEMM
    Loop body:  y = Add(Gemm(x, U), Gather(P, t))

Exact: every hoisted op acts on each time row on its own (elementwise, or along axes other
than time), so computing it on the whole [T, ...] tensor and gathering row t gives the
same numbers as computing it on row t — up to the last bit where ONNX Runtime evaluates a
transcendental op (Log, Exp, Tanh, ...) or a GEMM with another kernel path for the larger
tensor (seen: MOL samples within 3e-5 after hoisting log(u) - log(1 - u)).
Does not apply to values that read the loop-carried state, to Loops whose body reads
only rows of outer tensors without arithmetic on them, or outside Loop bodies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import onnx_ir as ir

from waveopt.passes._util import (
    Builder,
    ShapeInfo,
    const_array,
    dims_with,
    int_list,
    is_onnx_op,
    loop_bodies,
    remove_dead,
    set_shape,
)
from waveopt.passes.base import WaveoptPass

__all__ = ["HoistAuxProjectionsPass"]


class _Invariant:
    def __repr__(self) -> str:
        return "INVARIANT"


INVARIANT = _Invariant()
"""The form of a body value that is the same at every step."""

TRIP = "trip count"
"""Row key of tensors whose time axis has exactly as many rows as the Loop runs steps."""


@dataclasses.dataclass(frozen=True)
class Rows:
    """The form of a body value that is row t (along ``axis``) of a [.., T, ..] tensor.

    ``rank`` is the rank of the body value (the row); ``key`` says how many rows the whole
    tensor has: ``TRIP`` (as many as the Loop's trip count) or the outer tensor it comes from.
    Rows with different keys may differ in length and are never combined.
    """

    axis: int
    rank: int
    key: object


Form = _Invariant | Rows | None  # None: depends on the loop-carried state

_NONDETERMINISTIC = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                     "Multinomial", "Bernoulli", "Dropout"}
_ELEMENTWISE = {
    # unary
    "Abs", "Acos", "Asin", "Atan", "Ceil", "Cos", "Cosh", "Elu", "Erf", "Exp", "Floor", "Gelu",
    "HardSigmoid", "HardSwish", "Identity", "IsInf", "IsNaN", "LeakyRelu", "Log", "Mish", "Neg",
    "Not", "Reciprocal", "Relu", "Round", "Selu", "Sigmoid", "Sign", "Sin", "Sinh", "Softplus",
    "Softsign", "Sqrt", "Tan", "Tanh", "ThresholdedRelu", "Cast", "CastLike",
    # n-ary with multidirectional broadcasting, and Clip/PRelu/Where
    "Add", "And", "Clip", "Div", "Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual",
    "Max", "Mean", "Min", "Mod", "Mul", "Or", "Pow", "PRelu", "Sub", "Sum", "Where", "Xor",
}
# Ops that only move data: a chain of these alone is not worth hoisting.
_DATA_MOVEMENT = {"Gather", "Slice", "Split", "Concat", "Unsqueeze", "Squeeze", "Identity", "Cast",
                  "CastLike"}


class LoopScope:
    """The form of every value of one Loop body: invariant, a row of a per-step tensor, or neither.

    Used by split_concat_matmul and fold_linear to group what this pass can hoist.
    """

    def __init__(self, loop: ir.Node, body: ir.Graph, shapes: ShapeInfo, opset: int) -> None:
        self.loop, self.body, self.shapes, self.opset = loop, body, shapes, opset
        self.index = body.inputs[0] if body.inputs else None
        self.trip = loop.inputs[0] if loop.inputs else None
        self.can_align = self.trip is not None and self._runs_to_trip_count()
        self._forms: dict[ir.Value, Form] = {}
        self._trip_rows_memo: dict[tuple[ir.Value, int], bool] = {}
        for node in body:
            self.classify(node)

    # --- forms -------------------------------------------------------------------------
    def form(self, value: ir.Value | None) -> Form:
        if value is None:
            return INVARIANT
        if value in self._forms:
            return self._forms[value]
        if value.const_value is not None or const_array(value) is not None:
            return INVARIANT
        if value.graph is self.body or value in self.body.inputs:
            return None  # a body input, or a body value not classified (yet)
        return INVARIANT  # outer scope

    def hoistable(self, value: ir.Value | None) -> bool:
        return self.form(value) is not None

    def classify(self, node: ir.Node) -> None:
        """Record the forms of ``node``'s outputs (nodes must come in topological order)."""
        forms = self._node_forms(node)
        for out, form in zip(node.outputs, forms or [None] * len(node.outputs)):
            self._forms[out] = form

    def _node_forms(self, node: ir.Node) -> list[Form] | None:
        if node.domain not in ("", "ai.onnx") or node.op_type in _NONDETERMINISTIC:
            return None
        if any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for a in node.attributes.values()):
            return None
        forms = [self.form(v) for v in node.inputs]
        if all(f is INVARIANT for f in forms):
            return [INVARIANT] * len(node.outputs)
        if node.op_type == "Gather" and node.inputs[1] is self.index and forms[0] is INVARIANT:
            return self._gather_rows(node)
        rule = _RULES.get(node.op_type)
        if rule is None or any(f is None for f in forms):
            return None
        return rule.forms(self, node, forms)

    def _gather_rows(self, node: ir.Node) -> list[Form] | None:
        rank = self.shapes.rank(node.inputs[0])
        if self.index is None or rank is None or rank < 1:
            return None
        axis = _normalize(node.attributes.get_int("axis", 0), rank)
        if axis is None:
            return None
        key = TRIP if self.can_align or self.trip_rows(node.inputs[0], axis) else node.inputs[0]
        return [Rows(axis, rank - 1, key)]

    def rows_of(self, forms: Sequence[Form], values: Sequence[ir.Value | None]) -> Rows | None:
        """The common Rows of an elementwise op's operands (invariants must broadcast into a row)."""
        rows = {f for f in forms if isinstance(f, Rows)}
        if len(rows) != 1:
            return None
        (r,) = rows
        for f, v in zip(forms, values):
            if f is INVARIANT and v is not None:
                rank = self.shapes.rank(v)
                if rank is None or rank > r.rank:
                    return None
        return r

    # --- row counts --------------------------------------------------------------------
    def _runs_to_trip_count(self) -> bool:
        """True when the loop condition is constantly true: it runs exactly M steps."""
        cond = self.loop.inputs[1] if len(self.loop.inputs) > 1 else None
        if cond is not None and not _is_true(cond):
            return False
        if len(self.body.inputs) < 2 or not self.body.outputs:
            return False
        out = self.body.outputs[0]
        while out.producer() is not None and is_onnx_op(out.producer(), "Identity"):
            out = out.producer().inputs[0]
        return out is self.body.inputs[1] or _is_true(out)

    def trip_rows(self, value: ir.Value, axis: int) -> bool:
        """Does the outer tensor ``value`` provably have exactly trip-count rows along ``axis``?"""
        key = (value, axis)
        if key not in self._trip_rows_memo:
            self._trip_rows_memo[key] = False  # cycles cannot happen; guards deep recursion
            self._trip_rows_memo[key] = self._trip_rows(value, axis)
        return self._trip_rows_memo[key]

    def _trip_rows(self, value: ir.Value, axis: int) -> bool:
        if self.trip is None:
            return False
        if self._is_shape_of(self.trip, value, axis):
            return True
        node = value.producer()
        if node is None or node.domain not in ("", "ai.onnx"):
            return False
        rank = self.shapes.rank(value)
        op = node.op_type
        if op == "Slice":
            axes = _slice_axes(node, self.shapes.rank(node.inputs[0]))
            if axes is None:
                return False
            if axes == [axis] and int_list(node.inputs[1]) == [0] and self._is_trip(node.inputs[2]) \
                    and (len(node.inputs) < 5 or int_list(node.inputs[4]) in (None, [1])):
                return True
            return axis not in axes and self.trip_rows(node.inputs[0], axis)
        if op in _ELEMENTWISE:
            if rank is None:
                return False
            carried = False
            for v in node.inputs:
                if v is None:
                    continue
                dims = self.shapes.dims(v)
                if dims is None:
                    return False
                if len(dims) < rank - axis or (len(dims) == rank and dims[axis] == 1):
                    continue  # does not reach the time axis
                if len(dims) != rank or not self.trip_rows(v, axis):
                    return False
                carried = True
            return carried
        if op == "MatMul":
            w_rank = self.shapes.rank(node.inputs[1])
            return w_rank == 2 and rank is not None and axis < rank - 1 and self.trip_rows(node.inputs[0], axis)
        if op == "Concat":
            if rank is None or _normalize(node.attributes.get_int("axis", 0), rank) == axis:
                return False
            return all(self.trip_rows(v, axis) for v in node.inputs)
        if op in ("Split", "Softmax", "LogSoftmax"):
            default = 0 if op == "Split" else -1
            if rank is None or _normalize(node.attributes.get_int("axis", default), rank) == axis:
                return False
            return self.trip_rows(node.inputs[0], axis)
        if op == "Gather":
            in_rank = self.shapes.rank(node.inputs[0])
            g_axis = None if in_rank is None else _normalize(node.attributes.get_int("axis", 0), in_rank)
            return g_axis is not None and g_axis > axis and self.trip_rows(node.inputs[0], axis)
        if op in ("Unsqueeze", "Squeeze"):
            axes = int_list(node.inputs[1]) if len(node.inputs) > 1 else None
            in_rank = self.shapes.rank(node.inputs[0])
            if axes is None or rank is None or in_rank is None:
                return False
            if op == "Unsqueeze":
                axes = {_normalize(a, rank) for a in axes}
                if axis in axes:
                    return False
                in_axis = axis - sum(1 for a in axes if a is not None and a < axis)
            else:
                axes = {_normalize(a, in_rank) for a in axes}
                kept = [i for i in range(in_rank) if i not in axes]
                in_axis = kept[axis] if axis < len(kept) else None
            return in_axis is not None and self.trip_rows(node.inputs[0], in_axis)
        if op in ("Identity", "Cast"):
            return self.trip_rows(node.inputs[0], axis)
        return False

    def _is_trip(self, value: ir.Value | None) -> bool:
        """Is ``value`` the trip count (possibly reshaped to 1-D)?"""
        while value is not None and value is not self.trip:
            node = value.producer()
            if node is None or not is_onnx_op(node, "Reshape", "Unsqueeze", "Squeeze", "Identity"):
                return False
            value = node.inputs[0]
        return value is not None

    def _is_shape_of(self, count: ir.Value, value: ir.Value, axis: int) -> bool:
        """Is ``count`` (a scalar or [1]) the size of ``value``'s dim ``axis``?"""
        node = count.producer()
        while node is not None and is_onnx_op(node, "Squeeze", "Reshape", "Identity", "Unsqueeze"):
            node = node.inputs[0].producer()
        if node is None:
            return False
        rank = self.shapes.rank(value)
        if is_onnx_op(node, "Shape"):
            start, end = node.attributes.get_int("start", 0), node.attributes.get_int("end", None)
            return node.inputs[0] is value and rank is not None and _normalize(start, rank) == axis \
                and end is not None and _normalize(end, rank + 1) == axis + 1
        if is_onnx_op(node, "Gather", "Slice"):
            shape = node.inputs[0].producer()
            if shape is None or not is_onnx_op(shape, "Shape") or shape.inputs[0] is not value:
                return False
            if shape.attributes.get_int("start", 0) != 0 or shape.attributes.get("end") is not None:
                return False
            if node.op_type == "Gather":
                return int_list(node.inputs[1]) == [axis] and node.attributes.get_int("axis", 0) == 0
            return int_list(node.inputs[1]) == [axis] and int_list(node.inputs[2]) == [axis + 1]
        return False


# --- row-wise rules: the forms of an op's outputs, and the same op on whole tensors -----------
@dataclasses.dataclass
class _Rule:
    forms: Callable[[LoopScope, ir.Node, list[Form]], list[Form] | None]
    build: Callable[["_Hoister", ir.Node, list[Form], list[ir.Value | None]], list[ir.Value]]


def _normalize(axis: int | None, rank: int) -> int | None:
    if axis is None:
        return None
    axis = axis + rank if axis < 0 else axis
    return axis if 0 <= axis < rank else None


def _to_whole(axis: int, time_axis: int) -> int:
    """A row axis (normalized) as an axis of the whole tensor."""
    return axis + 1 if axis >= time_axis else axis


def _is_true(value: ir.Value) -> bool:
    array = const_array(value)
    return array is not None and array.size == 1 and bool(array.reshape(-1)[0])


def _slice_axes(node: ir.Node, rank: int | None) -> list[int] | None:
    """Slice's axes, normalized, when constant (and ``rank`` is known for negative ones)."""
    starts = int_list(node.inputs[1]) if len(node.inputs) > 1 else None
    if starts is None:
        return None
    axes = int_list(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] is not None else \
        list(range(len(starts)))
    if axes is None:
        return None
    if any(a < 0 for a in axes):
        if rank is None:
            return None
        axes = [_normalize(a, rank) for a in axes]
    return None if any(a is None for a in axes) else axes


def _elementwise_forms(scope: LoopScope, node: ir.Node, forms: list[Form]) -> list[Form] | None:
    rows = scope.rows_of(forms, node.inputs)
    return None if rows is None else [rows]


def _elementwise_build(h: "_Hoister", node: ir.Node, forms, wholes) -> list[ir.Value]:
    rows = h.scope.rows_of(forms, node.inputs)
    inputs = []
    for f, v, w in zip(forms, node.inputs, wholes):
        if f is INVARIANT and v is not None:
            rank = h.scope.shapes.rank(v)
            if rank > rows.rank - rows.axis:  # it would meet the time axis: give it one of size 1
                w = h.unsqueeze(w, rows.axis - (rows.rank - rank), node)
        inputs.append(w)
    return h.emit(node, node.op_type, inputs, rows, attributes=node.attributes.values())


def _matmul_forms(scope: LoopScope, node: ir.Node, forms: list[Form]) -> list[Form] | None:
    x, w = forms
    if not isinstance(x, Rows) or w is not INVARIANT or scope.shapes.rank(node.inputs[1]) != 2:
        return None
    return [x] if x.rank >= 1 and x.axis < x.rank else None


def _matmul_build(h: "_Hoister", node: ir.Node, forms, wholes) -> list[ir.Value]:
    return h.emit(node, "MatMul", wholes, forms[0])


def _gemm_forms(scope: LoopScope, node: ir.Node, forms: list[Form]) -> list[Form] | None:
    attrs = node.attributes
    if attrs.get_int("transA", 0) or attrs.get_float("alpha", 1.0) != 1.0 or attrs.get_float("beta", 1.0) != 1.0:
        return None
    x, w = forms[0], forms[1]
    if not isinstance(x, Rows) or x.rank != 2 or w is not INVARIANT or scope.shapes.rank(node.inputs[1]) != 2:
        return None
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        if scope.rows_of([x, forms[2]], [node.inputs[0], node.inputs[2]]) is None:
            return None
    return [x]


def _gemm_build(h: "_Hoister", node: ir.Node, forms, wholes) -> list[ir.Value]:
    x = forms[0]
    weight = wholes[1]
    if node.attributes.get_int("transB", 0):
        weight = h.transpose(node.inputs[1], weight, node)
    (product,) = h.emit(node, "MatMul", [wholes[0], weight], x)
    if len(node.inputs) < 3 or node.inputs[2] is None:
        return [product]
    bias, c_form = wholes[2], forms[2]
    if c_form is INVARIANT:
        rank = h.scope.shapes.rank(node.inputs[2])
        if rank > x.rank - x.axis:
            bias = h.unsqueeze(bias, x.axis - (x.rank - rank), node)
    return h.emit(node, "Add", [product, bias], x)


def _axis_forms(attr: str, default: int, min_opset: int = 1):
    """Ops acting along one axis given by attribute ``attr`` (Concat, Split, Softmax, ...)."""

    def forms(scope: LoopScope, node: ir.Node, in_forms: list[Form]) -> list[Form] | None:
        if scope.opset < min_opset:
            return None
        data = [f for f, v in zip(in_forms, node.inputs) if v is not None]
        rows = {f for f in (data if node.op_type == "Concat" else data[:1])}
        if len(rows) != 1 or not isinstance(next(iter(rows)), Rows):
            return None
        (r,) = rows
        if node.op_type == "Split" and any(f is not INVARIANT for f in data[1:]):
            return None
        if _normalize(node.attributes.get_int(attr, default), r.rank) is None:
            return None
        return [r] * len(node.outputs)

    def build(h: "_Hoister", node: ir.Node, in_forms, wholes) -> list[ir.Value]:
        r = in_forms[0]
        axis = _to_whole(_normalize(node.attributes.get_int(attr, default), r.rank), r.axis)
        attrs = [a for a in node.attributes.values() if a.name != attr]
        attrs.append(ir.AttrInt64(attr, axis))
        return h.emit(node, node.op_type, wholes, r, attributes=attrs, num_outputs=len(node.outputs))

    return _Rule(forms, build)


def _slice_forms(scope: LoopScope, node: ir.Node, forms: list[Form]) -> list[Form] | None:
    x = forms[0]
    if not isinstance(x, Rows) or any(f is not INVARIANT for f in forms[1:]):
        return None
    if any(const_array(v) is None for v in node.inputs[1:] if v is not None):
        return None
    axes = _slice_axes(node, x.rank)
    if axes is None or any(_normalize(a, x.rank) is None for a in axes):
        return None
    return [x]


def _slice_build(h: "_Hoister", node: ir.Node, forms, wholes) -> list[ir.Value]:
    x = forms[0]
    axes = [_to_whole(a, x.axis) for a in _slice_axes(node, x.rank)]
    inputs = list(wholes[:3]) + [h.builder.int64s(axes)]
    if len(node.inputs) > 4 and node.inputs[4] is not None:
        inputs.append(wholes[4])
    return h.emit(node, "Slice", inputs, x)


def _gather_forms(scope: LoopScope, node: ir.Node, forms: list[Form]) -> list[Form] | None:
    x, idx = forms
    indices = const_array(node.inputs[1])
    if not isinstance(x, Rows) or idx is not INVARIANT or indices is None:
        return None
    axis = _normalize(node.attributes.get_int("axis", 0), x.rank)
    if axis is None or axis < x.axis:  # a gathered axis before the time axis would move it
        return None
    return [Rows(x.axis, x.rank - 1 + indices.ndim, x.key)]


def _gather_build(h: "_Hoister", node: ir.Node, forms, wholes) -> list[ir.Value]:
    x = forms[0]
    axis = _to_whole(_normalize(node.attributes.get_int("axis", 0), x.rank), x.axis)
    indices = const_array(node.inputs[1])
    return h.emit(node, "Gather", wholes, Rows(x.axis, x.rank - 1 + indices.ndim, x.key), axis=axis)


def _reshape_axes(node: ir.Node, x: Rows) -> tuple[list[int], Rows] | None:
    """Unsqueeze/Squeeze with constant axes on a row: (the whole tensor's axes, the output Rows).

    The time axis stays right after the row dim it followed (first when it led).
    """
    axes = int_list(node.inputs[1]) if len(node.inputs) > 1 else None
    if axes is None:
        return None
    if node.op_type == "Unsqueeze":
        out_rank = x.rank + len(axes)
        axes = sorted(_normalize(a, out_rank) if _normalize(a, out_rank) is not None else -1 for a in axes)
        if -1 in axes or len(set(axes)) != len(axes):
            return None
        kept = [p for p in range(out_rank) if p not in axes]  # output positions of the row's dims
        time = 0 if x.axis == 0 else kept[x.axis - 1] + 1
        return [p + 1 if p >= time else p for p in axes], Rows(time, out_rank, x.key)
    axes = sorted(_normalize(a, x.rank) if _normalize(a, x.rank) is not None else -1 for a in axes)
    if -1 in axes or len(set(axes)) != len(axes):
        return None
    time = x.axis - sum(1 for a in axes if a < x.axis)
    return [a + 1 if a >= x.axis else a for a in axes], Rows(time, x.rank - len(axes), x.key)


def _unsqueeze_forms(scope: LoopScope, node: ir.Node, forms: list[Form]) -> list[Form] | None:
    x = forms[0]
    if not isinstance(x, Rows) or forms[1] is not INVARIANT:
        return None
    mapped = _reshape_axes(node, x)
    return None if mapped is None else [mapped[1]]


def _unsqueeze_build(h: "_Hoister", node: ir.Node, forms, wholes) -> list[ir.Value]:
    axes, rows = _reshape_axes(node, forms[0])
    return h.emit(node, node.op_type, [wholes[0], h.builder.int64s(axes)], rows)


_RULES: dict[str, _Rule] = {op: _Rule(_elementwise_forms, _elementwise_build) for op in _ELEMENTWISE}
_RULES.update({
    "MatMul": _Rule(_matmul_forms, _matmul_build),
    "Gemm": _Rule(_gemm_forms, _gemm_build),
    "Slice": _Rule(_slice_forms, _slice_build),
    "Gather": _Rule(_gather_forms, _gather_build),
    "Unsqueeze": _Rule(_unsqueeze_forms, _unsqueeze_build),
    "Squeeze": _Rule(_unsqueeze_forms, _unsqueeze_build),
    "Concat": _axis_forms("axis", 0),
    "Split": _axis_forms("axis", 0),
    "Softmax": _axis_forms("axis", -1, min_opset=13),
    "LogSoftmax": _axis_forms("axis", -1, min_opset=13),
})


class _Hoister:
    """Builds, before one Loop, the whole-tensor version of hoistable body values."""

    def __init__(self, scope: LoopScope, builder: Builder) -> None:
        self.scope = scope
        self.builder = builder
        self.outer_nodes: list[ir.Node] = []
        self.body_nodes: set[ir.Node] = set()  # body nodes whose work moved out
        self._wholes: dict[ir.Value, ir.Value] = {}
        self._trip_1d: ir.Value | None = None

    def whole(self, value: ir.Value) -> ir.Value:
        """The outer value holding ``value`` for every step (or ``value`` itself if invariant outside)."""
        if value in self._wholes:
            return self._wholes[value]
        scope = self.scope
        form = scope.form(value)
        node = value.producer()
        in_body = node is not None and node.graph is scope.body
        if form is INVARIANT and not in_body:
            if value.is_initializer() and value.graph is scope.body:
                return self.builder.constant(value.const_value.numpy(), "hoisted_const")
            return value
        if node is None:
            raise AssertionError(f"{value} has no producer but form {form}")
        self.body_nodes.add(node)
        if form is INVARIANT:
            inputs = [None if v is None else self.whole(v) for v in node.inputs]
            outs = self.emit(node, node.op_type, inputs, None, attributes=node.attributes.values(),
                             num_outputs=len(node.outputs), domain=node.domain)
        elif node.op_type == "Gather" and node.inputs[1] is scope.index:
            outs = [self._source(node, form)]
        else:
            forms = [scope.form(v) for v in node.inputs]
            wholes = [None if v is None else self.whole(v) for v in node.inputs]
            outs = _RULES[node.op_type].build(self, node, forms, wholes)
        for out, whole in zip(node.outputs, outs):
            self._wholes[out] = whole
        return self._wholes[value]

    def _source(self, gather: ir.Node, rows: Rows) -> ir.Value:
        """The gathered outer tensor, cut to trip-count rows unless it provably has them."""
        source = self.whole(gather.inputs[0])
        if not self.scope.can_align or self.scope.trip_rows(source, rows.axis):
            return source
        if self._trip_1d is None:
            (self._trip_1d,) = self.emit(gather, "Reshape", [self.scope.trip, self.builder.int64s([-1])], None,
                                         annotate=False)
            self._trip_1d.shape = ir.Shape([1])
            self._trip_1d.type = ir.TensorType(ir.DataType.INT64)
        inputs = [source, self.builder.int64s([0]), self._trip_1d, self.builder.int64s([rows.axis])]
        (cut,) = self.emit(gather, "Slice", inputs, None, annotate=False)
        set_shape(cut, dims_with(source, self.scope.shapes), like=source)
        return cut

    def emit(self, like: ir.Node, op_type: str, inputs, rows: Rows | None, attributes=(),
             num_outputs: int = 1, domain: str = "", annotate: bool = True, **attrs) -> list[ir.Value]:
        """Append an outer node; its outputs get the shapes of ``like``'s outputs plus the time axis."""
        attributes = [_copy_attr(a) for a in attributes]
        node = self.builder.node(op_type, inputs, like=like, num_outputs=num_outputs,
                                 attributes=attributes, **attrs)
        if domain:
            node.domain = domain
        self.outer_nodes.append(node)
        first = next((v for v in inputs if v is not None), None)
        for out, body_out in zip(node.outputs, like.outputs if annotate and len(like.outputs) == num_outputs else []):
            dims = dims_with(body_out, self.scope.shapes)
            if rows is not None:
                dims = [*dims[:rows.axis], None, *dims[rows.axis:]] if dims is not None and len(
                    dims) == rows.rank else [None] * (rows.rank + 1)
            set_shape(out, dims, like=body_out, type_from=first if op_type not in ("Cast", "CastLike") else None)
        return list(node.outputs)

    def unsqueeze(self, value: ir.Value, axis: int, like: ir.Node) -> ir.Value:
        array = const_array(value)
        if array is not None:
            return self.builder.constant(np.expand_dims(array, axis), "hoisted_const")
        node = self.builder.node("Unsqueeze", [value, self.builder.int64s([axis])], like=like)
        self.outer_nodes.append(node)
        return node.outputs[0]

    def transpose(self, original: ir.Value, value: ir.Value, like: ir.Node) -> ir.Value:
        array = const_array(original)
        if array is not None:
            return self.builder.constant(np.ascontiguousarray(array.T), "weight_t")
        node = self.builder.node("Transpose", [value], like=like, perm=[1, 0])
        self.outer_nodes.append(node)
        return node.outputs[0]


def _copy_attr(attr: ir.Attr) -> ir.Attr:
    return ir.Attr(attr.name, attr.type, attr.value, doc_string=attr.doc_string)


def model_opset(model: ir.Model) -> int:
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))


class HoistAuxProjectionsPass(WaveoptPass):
    """Move what a Loop body computes from the step index alone out of the Loop.

    Per Loop (innermost first), on its body:

    1. A value is *invariant* when it is computed only from constants and outer-scope
       values (by deterministic ONNX ops without subgraphs); it is a *row* when it is
       ``Gather(X, t, axis=a)`` of an invariant X with the iteration number t, or a
       row-wise op of rows and invariants:

       - elementwise ops (unary, broadcasting binary/variadic, Clip, PRelu, Where, Cast)
         whose invariant operands have at most the row's rank (one that would broadcast
         over the time axis is given a size-1 time axis);
       - MatMul(row, W) with an invariant 2-D W; Gemm(row, W, C) with transA=0,
         alpha=beta=1 (becomes MatMul [+ Add] on the whole tensor);
       - Slice, Split, Concat, Softmax/LogSoftmax (opset >= 13) along non-time axes;
         Gather with constant indices along an axis after the time axis;
         Unsqueeze/Squeeze with constant axes.

       Anything else (and anything that reads the loop-carried state) is per-step.
    2. Rows of different outer tensors are combined only when they have equally many
       rows: when the Loop runs exactly its trip count M (no early exit), each gathered
       tensor is cut to its first M rows before the Loop unless it provably has M rows
       (M is its Shape, or it is derived from such tensors); otherwise only rows of the
       same tensor are combined.
    3. Every row or invariant that a per-step node (or the body's outputs) reads is
       computed before the Loop: the row as one [.., T, ..] tensor gathered by t in the
       body, the invariant as is. Row chains are hoisted only when they do arithmetic
       (a chain of Gather/Slice/Concat/... alone stays), Constant nodes stay.

    Exact (see the module docstring). The hoisted tensors hold every row of the gathered
    tensors, not only the rows the Loop uses.
    """

    name = "hoist_aux_projections"
    description = "compute per-step work that depends only on the step index for all steps before the Loop"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        shapes = ShapeInfo(model)
        builder = Builder(model, "hoist")
        hoisted = moved = loops = 0
        for loop, body in reversed(list(loop_bodies(model.graph))):
            scope = LoopScope(loop, body, shapes, model_opset(model))
            roots = _roots(scope)
            if not roots:
                continue
            hoister = _Hoister(scope, builder)
            wholes = [hoister.whole(v) for v in roots]
            loop.graph.insert_before(loop, hoister.outer_nodes)
            for value, whole in zip(roots, wholes):
                _replace_in_body(scope, builder, value, whole)
            moved += remove_dead(body, hoister.body_nodes)
            hoisted += len(roots)
            loops += 1
        if not hoisted:
            return self.result(model)
        return self.result(model, f"hoisted {hoisted} values out of {loops} Loop(s) "
                                  f"({moved} body nodes moved out)")


def _roots(scope: LoopScope) -> list[ir.Value]:
    """Hoistable values read by per-step nodes or by the body's outputs, worth hoisting."""
    body = scope.body
    outputs = set(body.outputs)
    roots, worth = [], {}
    for node in body:
        if is_onnx_op(node, "Constant"):
            continue
        for out in node.outputs:
            form = scope.form(out)
            if form is None or (form is not INVARIANT and not _does_arithmetic(scope, out, worth)):
                continue
            per_step_use = out in outputs or any(
                c.graph is not body or any(scope.form(o) is None for o in c.outputs)
                for c in out.consumers())
            if per_step_use:
                roots.append(out)
    return roots


def _does_arithmetic(scope: LoopScope, value: ir.Value, memo: dict) -> bool:
    """Does the row chain computing ``value`` inside the body do more than move data?"""
    if value in memo:
        return memo[value]
    node = value.producer()
    if node is None or node.graph is not scope.body or is_onnx_op(node, "Constant"):
        return False
    result = node.op_type not in _DATA_MOVEMENT or any(
        v is not None and _does_arithmetic(scope, v, memo) for v in node.inputs)
    memo[value] = result
    return result


def _replace_in_body(scope: LoopScope, builder: Builder, value: ir.Value, whole: ir.Value) -> None:
    form = scope.form(value)
    producer = value.producer()
    if form is INVARIANT:
        if value not in scope.body.outputs:
            value.replace_all_uses_with(whole)
            return
        node = builder.node("Identity", [whole], like=producer)  # a body output must be made in the body
    else:
        node = builder.node("Gather", [whole, scope.index], like=producer, axis=form.axis)
    set_shape(node.outputs[0], dims_with(value, scope.shapes), like=value, type_from=whole)
    scope.body.insert_before(producer, node)
    value.replace_all_uses_with(node.outputs[0], replace_graph_outputs=True)
    scope.classify(node)
