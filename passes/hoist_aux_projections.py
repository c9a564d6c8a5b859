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

from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from waveopt.passes._analysis.loop_scope import (
    DATA_MOVEMENT,
    ELEMENTWISE,
    INVARIANT,
    ROW_FORMS,
    Form,
    LoopScope,
    Rows,
    model_opset,
    normalize_axis,
    reshape_axes,
    slice_axes,
    to_whole_axis,
)
from waveopt.passes._ir import (
    Builder,
    ShapeInfo,
    const_array,
    dims_with,
    is_onnx_op,
    loop_bodies,
    outputs_of,
    remove_dead,
    set_shape,
)
from waveopt.passes.base import WaveoptPass

__all__ = ["HoistAuxProjectionsPass"]


# --- row-wise builds: the op of a row rule on whole tensors -----------------------------
Build = Callable[["_Hoister", ir.Node, list[Form], list[ir.Value | None]], list[ir.Value]]


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


def _matmul_build(h: "_Hoister", node: ir.Node, forms, wholes) -> list[ir.Value]:
    return h.emit(node, "MatMul", wholes, forms[0])


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


def _axis_build(attr: str, default: int):
    """Build of ops acting along one axis given by attribute ``attr``."""

    def build(h: "_Hoister", node: ir.Node, in_forms, wholes) -> list[ir.Value]:
        r = in_forms[0]
        axis = to_whole_axis(normalize_axis(node.attributes.get_int(attr, default), r.rank), r.axis)
        attrs = [a for a in node.attributes.values() if a.name != attr]
        attrs.append(ir.AttrInt64(attr, axis))
        return h.emit(node, node.op_type, wholes, r, attributes=attrs, num_outputs=len(node.outputs))

    return build


def _slice_build(h: "_Hoister", node: ir.Node, forms, wholes) -> list[ir.Value]:
    x = forms[0]
    axes = [to_whole_axis(a, x.axis) for a in slice_axes(node, x.rank)]
    inputs = list(wholes[:3]) + [h.builder.int64s(axes)]
    if len(node.inputs) > 4 and node.inputs[4] is not None:
        inputs.append(wholes[4])
    return h.emit(node, "Slice", inputs, x)


def _gather_build(h: "_Hoister", node: ir.Node, forms, wholes) -> list[ir.Value]:
    x = forms[0]
    axis = to_whole_axis(normalize_axis(node.attributes.get_int("axis", 0), x.rank), x.axis)
    indices = const_array(node.inputs[1])
    return h.emit(node, "Gather", wholes, Rows(x.axis, x.rank - 1 + indices.ndim, x.key), axis=axis)


def _unsqueeze_build(h: "_Hoister", node: ir.Node, forms, wholes) -> list[ir.Value]:
    axes, rows = reshape_axes(node, forms[0])
    return h.emit(node, node.op_type, [wholes[0], h.builder.int64s(axes)], rows)


_BUILDS: dict[str, Build] = {op: _elementwise_build for op in ELEMENTWISE}
_BUILDS.update({
    "MatMul": _matmul_build,
    "Gemm": _gemm_build,
    "Slice": _slice_build,
    "Gather": _gather_build,
    "Unsqueeze": _unsqueeze_build,
    "Squeeze": _unsqueeze_build,
    "Concat": _axis_build("axis", 0),
    "Split": _axis_build("axis", 0),
    "Softmax": _axis_build("axis", -1),
    "LogSoftmax": _axis_build("axis", -1),
})
assert _BUILDS.keys() == ROW_FORMS.keys()


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
            outs = _BUILDS[node.op_type](self, node, forms, wholes)
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
                                 attributes=attributes, domain=domain, **attrs)
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
            moved += remove_dead(outputs_of(hoister.body_nodes))
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
    result = node.op_type not in DATA_MOVEMENT or any(
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
