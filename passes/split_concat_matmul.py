"""Split a projection of a concatenation into the per-step part and the part a Loop can hoist.

Before (Loop body; x loop-carried, m_t and a_t rows of outer tensors)::

    y = Gemm(Concat(x, m_t, a_t, axis=-1), W, b, transB=1)      # W: [N, 1 + M + A]

After::

    y = Add(Mul(x, w_x),                                         # x is [B, 1]: a rank-1 term
            Gemm(Concat(m_t, a_t, axis=-1), W[:, 1:], b, transB=1))   # hoistable as a whole

Exact up to the order of fp32 summation: each output is the same dot product, split into
two partial sums. Does not apply outside Loop bodies, or when the parts are all per-step
or all hoistable (then hoist_aux_projections takes the whole product).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

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
from waveopt.passes._analysis.loop_scope import LoopScope, model_opset

__all__ = ["SplitConcatMatMulPass"]


class SplitConcatMatMulPass(WaveoptPass):
    """Split ``MatMul(Concat(...), W)`` by what a Loop can hoist.

    In every Loop body (nested ones included):

    1. Match ``MatMul(Concat(p1, ..., pk, axis=last), W)`` or ``Gemm(Concat(...), W, C)``
       (transA=0, alpha=beta=1, any transB) with a constant 2-D W and parts of static width.
    2. Sort the parts into per-step parts and hoistable ones (values hoist_aux_projections
       can compute for all steps at once: rows of outer tensors or invariants). If all
       parts fall in one group, do nothing.
    3. Replace the product by ``per_step + hoistable``, each group a product of the
       Concat of its parts (a part alone needs no Concat) with W's matching input rows;
       Gemm's C goes with the hoistable group. A per-step group of width 1 becomes
       ``Mul(p, w)`` with w the [1, N] row of W (a rank-1 term, exact as a K=1 product).

    Outside Loop bodies nothing changes: there the split buys nothing.
    """

    name = "split_concat_matmul"
    description = "split MatMul/Gemm of a Concat into per-step and hoistable products (Loop bodies)"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        shapes = ShapeInfo(model)
        builder = Builder(model, "split")
        split = 0
        for loop, body in list(loop_bodies(model.graph)):
            scope = LoopScope(loop, body, shapes, model_opset(model))
            dead = []
            for node in list(body):
                if _try_split(node, scope, builder):
                    split += 1
                    dead.append(node)
            remove_dead(outputs_of(dead))  # and the Concats and weights nobody else reads
        if not split:
            return self.result(model)
        return self.result(model, f"split {split} products of a Concat")


def _try_split(node: ir.Node, scope: LoopScope, builder: Builder) -> bool:
    split = _match(node, scope)
    if split is None:
        return False
    split.rewrite(builder)
    return True


def _match(node: ir.Node, scope: LoopScope) -> _Split | None:
    """The split of a MatMul/Gemm (no transA, alpha = beta = 1) of a body Concat along its
    last axis by a constant weight, when some parts are hoistable and some are not."""
    if not is_onnx_op(node, "MatMul", "Gemm"):
        return None
    gemm = node.op_type == "Gemm"
    attrs = node.attributes
    if gemm and (attrs.get_int("transA", 0) or attrs.get_float("alpha", 1.0) != 1.0
                 or attrs.get_float("beta", 1.0) != 1.0):
        return None
    trans_b = gemm and bool(attrs.get_int("transB", 0))
    weight = const_array(node.inputs[1])
    concat = node.inputs[0].producer()
    if weight is None or weight.ndim != 2 or concat is None or not is_onnx_op(concat, "Concat"):
        return None
    if concat.graph is not scope.body:
        return None
    parts = list(concat.inputs)
    widths = [scope.shapes.last_dim(p) for p in parts]
    rank = scope.shapes.rank(concat.outputs[0]) or scope.shapes.rank(parts[0])
    axis = concat.attributes.get_int("axis", 0)
    k = weight.shape[1] if trans_b else weight.shape[0]
    if None in widths or rank is None or axis not in (-1, rank - 1) or sum(widths) != k:
        return None
    hoistable = [scope.hoistable(p) for p in parts]
    if all(hoistable) or not any(hoistable):
        return None
    return _Split(node, scope, concat, parts, widths, axis, weight, gemm, trans_b, hoistable)


@dataclasses.dataclass
class _Split:
    """A matched product ``node`` of ``concat``'s ``parts`` and how to split it."""

    node: ir.Node
    scope: LoopScope
    concat: ir.Node
    parts: list[ir.Value]
    widths: list[int]
    axis: int
    weight: np.ndarray
    gemm: bool
    trans_b: bool
    hoistable: list[bool]

    def rewrite(self, builder: Builder) -> None:
        """y = per-step part + hoistable part (the bias goes with the hoistable one)."""
        node, scope = self.node, self.scope
        new_nodes: list[ir.Node] = []
        step_part = self._product([i for i, h in enumerate(self.hoistable) if not h], False, builder, new_nodes)
        hoist_part = self._product([i for i, h in enumerate(self.hoistable) if h], True, builder, new_nodes)
        total = builder.node("Add", [step_part, hoist_part], like=node)
        set_shape(total.outputs[0], dims_with(node.outputs[0], scope.shapes), like=node.outputs[0])
        new_nodes.append(total)
        scope.body.insert_before(node, new_nodes)
        for new in new_nodes:
            scope.classify(new)
        node.outputs[0].replace_all_uses_with(total.outputs[0], replace_graph_outputs=True)

    def _rows_of(self, group: list[int]) -> np.ndarray:
        """The weight's rows (columns with transB) that multiply the ``group`` of parts."""
        offsets = np.cumsum([0, *self.widths])
        index = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in group])
        return self.weight[:, index] if self.trans_b else self.weight[index, :]

    def _operand(self, group: list[int], builder: Builder, new_nodes: list[ir.Node]) -> ir.Value:
        """The ``group`` of parts: the one part, else their Concat."""
        if len(group) == 1:
            return self.parts[group[0]]
        concat = self.concat
        cat = builder.node("Concat", [self.parts[i] for i in group], like=concat, axis=self.axis)
        set_shape(cat.outputs[0], _with_last(dims_with(concat.outputs[0], self.scope.shapes),
                                             int(sum(self.widths[i] for i in group))), like=concat.outputs[0])
        new_nodes.append(cat)
        return cat.outputs[0]

    def _product(self, group: list[int], with_bias: bool, builder: Builder, new_nodes: list[ir.Node]) -> ir.Value:
        """The ``group``'s share of the product: a Mul when it is one column (rank 1)."""
        node, trans_b = self.node, self.trans_b
        x, w = self._operand(group, builder, new_nodes), self._rows_of(group)
        if not with_bias and w.size == (w.shape[0] if trans_b else w.shape[1]):  # K = 1: rank-1 term
            row = (w.T if trans_b else w).reshape(1, -1)
            out = builder.node("Mul", [x, builder.constant(row, "rank1")], like=node)
        elif self.gemm:
            inputs = [x, builder.constant(w, "weight")]
            if with_bias and len(node.inputs) > 2 and node.inputs[2] is not None:
                inputs.append(node.inputs[2])
            out = builder.node("Gemm", inputs, like=node, transB=int(trans_b))
        else:
            out = builder.node("MatMul", [x, builder.constant(w, "weight")], like=node)
        set_shape(out.outputs[0], dims_with(node.outputs[0], self.scope.shapes), like=node.outputs[0])
        new_nodes.append(out)
        return out.outputs[0]


def _with_last(dims, last: int):
    return None if dims is None else [*dims[:-1], last]
