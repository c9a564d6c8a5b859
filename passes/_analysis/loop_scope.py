"""The loop scope: the form of every value of one Loop body (the same at every step, row t
of a per-step tensor, or depending on the loop-carried state), with the row-wise rules that
say how each op maps forms. Shared by hoist_aux_projections, split_concat_matmul and
fold_linear.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import onnx_ir as ir

from waveopt.passes._ir import ShapeInfo, const_array, int_list, is_onnx_op

__all__ = ["DATA_MOVEMENT", "ELEMENTWISE", "INVARIANT", "ROW_FORMS", "TRIP", "Form", "LoopScope", "Rows", "model_opset", "normalize_axis",
           "reshape_axes", "slice_axes", "to_whole_axis"]


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
ELEMENTWISE = {
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
DATA_MOVEMENT = {"Gather", "Slice", "Split", "Concat", "Unsqueeze", "Squeeze", "Identity", "Cast",
                  "CastLike"}


class LoopScope:
    """The form of every value of one Loop body: invariant, a row of a per-step tensor, or neither.

    Used by hoist_aux_projections to hoist, by split_concat_matmul and fold_linear to group
    what it can hoist.
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
        rule = ROW_FORMS.get(node.op_type)
        if rule is None or any(f is None for f in forms):
            return None
        return rule(self, node, forms)

    def _gather_rows(self, node: ir.Node) -> list[Form] | None:
        rank = self.shapes.rank(node.inputs[0])
        if self.index is None or rank is None or rank < 1:
            return None
        axis = normalize_axis(node.attributes.get_int("axis", 0), rank)
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
        """``trip_rows``' rules: a slice [0, trip) of the time axis, or an op whose rows along
        ``axis`` are those of inputs that have trip-count rows."""
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
            return self._slice_rows(node, axis)
        if op in ELEMENTWISE:
            return rank is not None and self._elementwise_rows(node, rank, axis)
        if op == "MatMul":
            w_rank = self.shapes.rank(node.inputs[1])
            return w_rank == 2 and rank is not None and axis < rank - 1 and self.trip_rows(node.inputs[0], axis)
        if op == "Concat":
            if rank is None or normalize_axis(node.attributes.get_int("axis", 0), rank) == axis:
                return False
            return all(self.trip_rows(v, axis) for v in node.inputs)
        if op in ("Split", "Softmax", "LogSoftmax"):
            default = 0 if op == "Split" else -1
            if rank is None or normalize_axis(node.attributes.get_int("axis", default), rank) == axis:
                return False
            return self.trip_rows(node.inputs[0], axis)
        if op == "Gather":
            in_rank = self.shapes.rank(node.inputs[0])
            g_axis = None if in_rank is None else normalize_axis(node.attributes.get_int("axis", 0), in_rank)
            return g_axis is not None and g_axis > axis and self.trip_rows(node.inputs[0], axis)
        if op in ("Unsqueeze", "Squeeze"):
            return self._unsqueeze_rows(node, rank, axis)
        if op in ("Identity", "Cast"):
            return self.trip_rows(node.inputs[0], axis)
        return False

    def _slice_rows(self, node: ir.Node, axis: int) -> bool:
        axes = slice_axes(node, self.shapes.rank(node.inputs[0]))
        if axes is None:
            return False
        if axes == [axis] and int_list(node.inputs[1]) == [0] and self._is_trip(node.inputs[2]) \
                and (len(node.inputs) < 5 or int_list(node.inputs[4]) in (None, [1])):
            return True
        return axis not in axes and self.trip_rows(node.inputs[0], axis)

    def _elementwise_rows(self, node: ir.Node, rank: int, axis: int) -> bool:
        """Every input that reaches the time axis has trip-count rows, and one does."""
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

    def _unsqueeze_rows(self, node: ir.Node, rank: int | None, axis: int) -> bool:
        """The input's rows along the axis that becomes ``axis`` (not an inserted one)."""
        axes = int_list(node.inputs[1]) if len(node.inputs) > 1 else None
        in_rank = self.shapes.rank(node.inputs[0])
        if axes is None or rank is None or in_rank is None:
            return False
        if node.op_type == "Unsqueeze":
            axes = {normalize_axis(a, rank) for a in axes}
            if axis in axes:
                return False
            in_axis = axis - sum(1 for a in axes if a is not None and a < axis)
        else:
            axes = {normalize_axis(a, in_rank) for a in axes}
            kept = [i for i in range(in_rank) if i not in axes]
            in_axis = kept[axis] if axis < len(kept) else None
        return in_axis is not None and self.trip_rows(node.inputs[0], in_axis)

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
            return node.inputs[0] is value and rank is not None and normalize_axis(start, rank) == axis \
                and end is not None and normalize_axis(end, rank + 1) == axis + 1
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


# --- row-wise rules: the forms of an op's outputs from its inputs' forms ---------------------
RowForms = Callable[[LoopScope, ir.Node, list[Form]], list[Form] | None]


def normalize_axis(axis: int | None, rank: int) -> int | None:
    if axis is None:
        return None
    axis = axis + rank if axis < 0 else axis
    return axis if 0 <= axis < rank else None


def to_whole_axis(axis: int, time_axis: int) -> int:
    """A row axis (normalized) as an axis of the whole tensor."""
    return axis + 1 if axis >= time_axis else axis


def _is_true(value: ir.Value) -> bool:
    array = const_array(value)
    return array is not None and array.size == 1 and bool(array.reshape(-1)[0])


def slice_axes(node: ir.Node, rank: int | None) -> list[int] | None:
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
        axes = [normalize_axis(a, rank) for a in axes]
    return None if any(a is None for a in axes) else axes


def reshape_axes(node: ir.Node, x: Rows) -> tuple[list[int], Rows] | None:
    """Unsqueeze/Squeeze with constant axes on a row: (the whole tensor's axes, the output Rows).

    The time axis stays right after the row dim it followed (first when it led).
    """
    axes = int_list(node.inputs[1]) if len(node.inputs) > 1 else None
    if axes is None:
        return None
    if node.op_type == "Unsqueeze":
        out_rank = x.rank + len(axes)
        axes = sorted(normalize_axis(a, out_rank) if normalize_axis(a, out_rank) is not None else -1 for a in axes)
        if -1 in axes or len(set(axes)) != len(axes):
            return None
        kept = [p for p in range(out_rank) if p not in axes]  # output positions of the row's dims
        time = 0 if x.axis == 0 else kept[x.axis - 1] + 1
        return [p + 1 if p >= time else p for p in axes], Rows(time, out_rank, x.key)
    axes = sorted(normalize_axis(a, x.rank) if normalize_axis(a, x.rank) is not None else -1 for a in axes)
    if -1 in axes or len(set(axes)) != len(axes):
        return None
    time = x.axis - sum(1 for a in axes if a < x.axis)
    return [a + 1 if a >= x.axis else a for a in axes], Rows(time, x.rank - len(axes), x.key)


def _elementwise_forms(scope: LoopScope, node: ir.Node, forms: list[Form]) -> list[Form] | None:
    rows = scope.rows_of(forms, node.inputs)
    return None if rows is None else [rows]


def _matmul_forms(scope: LoopScope, node: ir.Node, forms: list[Form]) -> list[Form] | None:
    x, w = forms
    if not isinstance(x, Rows) or w is not INVARIANT or scope.shapes.rank(node.inputs[1]) != 2:
        return None
    return [x] if x.rank >= 1 and x.axis < x.rank else None


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


def _slice_forms(scope: LoopScope, node: ir.Node, forms: list[Form]) -> list[Form] | None:
    x = forms[0]
    if not isinstance(x, Rows) or any(f is not INVARIANT for f in forms[1:]):
        return None
    if any(const_array(v) is None for v in node.inputs[1:] if v is not None):
        return None
    axes = slice_axes(node, x.rank)
    if axes is None or any(normalize_axis(a, x.rank) is None for a in axes):
        return None
    return [x]


def _gather_forms(scope: LoopScope, node: ir.Node, forms: list[Form]) -> list[Form] | None:
    x, idx = forms
    indices = const_array(node.inputs[1])
    if not isinstance(x, Rows) or idx is not INVARIANT or indices is None:
        return None
    axis = normalize_axis(node.attributes.get_int("axis", 0), x.rank)
    if axis is None or axis < x.axis:  # a gathered axis before the time axis would move it
        return None
    return [Rows(x.axis, x.rank - 1 + indices.ndim, x.key)]


def _unsqueeze_forms(scope: LoopScope, node: ir.Node, forms: list[Form]) -> list[Form] | None:
    x = forms[0]
    if not isinstance(x, Rows) or forms[1] is not INVARIANT:
        return None
    mapped = reshape_axes(node, x)
    return None if mapped is None else [mapped[1]]


def axis_forms(attr: str, default: int, min_opset: int = 1):
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
        if normalize_axis(node.attributes.get_int(attr, default), r.rank) is None:
            return None
        return [r] * len(node.outputs)

    return forms


ROW_FORMS: dict[str, RowForms] = {op: _elementwise_forms for op in ELEMENTWISE}
ROW_FORMS.update({
    "MatMul": _matmul_forms,
    "Gemm": _gemm_forms,
    "Slice": _slice_forms,
    "Gather": _gather_forms,
    "Unsqueeze": _unsqueeze_forms,
    "Squeeze": _unsqueeze_forms,
    "Concat": axis_forms("axis", 0),
    "Split": axis_forms("axis", 0),
    "Softmax": axis_forms("axis", -1, min_opset=13),
    "LogSoftmax": axis_forms("axis", -1, min_opset=13),
})


def model_opset(model: ir.Model) -> int:
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))
