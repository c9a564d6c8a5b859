"""Compose linear maps inside Loop bodies and regroup sums by what the Loop can hoist.

Before (Loop body; s the fed-back sample [B, 1], c_t hoisted, h1 loop-carried)::

    i  = Add(Mul(s, w_s), c_t)                  # I's output
    g  = Gemm(i, W_ih, b_ih, transB=1)          # rnn1's input projection
    x  = Add(i, h1)                             # the residual
    y  = Add(MatMul(x, W_x), a_t)               # rnn2's input projection (split)

After (constant products folded in float64, then cast)::

    g  = Add(Mul(s, w_s·W_ih^T), Add(MatMul(c_t, W_ih^T), b_ih))          # second part hoistable
    y  = Add(Add(Mul(s, w_s·W_x), MatMul(h1, W_x)), Add(MatMul(c_t, W_x), a_t))

Exact up to fp32 rounding: matrix products are associative and distribute over sums;
only the order of the additions and the rounding of the folded constants change.
Does not apply outside Loop bodies, to sums of per-step values only, or where composing
two maps would add per-step work (e.g. I's [89, 64] map into rnn1's [64, 192] projection
while I still reads the whole Concat: run split_concat_matmul and the hoist first).
"""

from __future__ import annotations

import dataclasses
import hashlib

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
from waveopt.passes._analysis.loop_scope import INVARIANT, LoopScope, Rows, model_opset

__all__ = ["FoldLinearPass"]

_LINEAR = ("Add", "Sub", "Neg", "Identity", "MatMul", "Gemm", "Mul")


@dataclasses.dataclass(frozen=True, eq=False)
class _Term:
    """One summand: ``leaf @ matrix`` (``leaf * scale`` when matrix is None), or a constant."""

    leaf: ir.Value | None = None
    matrix: np.ndarray | None = None  # float64 [K, N]
    scale: float = 1.0
    const: np.ndarray | None = None  # float64, broadcastable
    hoistable: bool = False
    source: ir.Value | None = None  # an existing value equal to this term

    def times(self, factor: float) -> "_Term":
        if self.const is not None:
            return dataclasses.replace(self, const=self.const * factor, source=None)
        if self.matrix is not None:
            return dataclasses.replace(self, matrix=self.matrix * factor, source=None)
        return dataclasses.replace(self, scale=self.scale * factor, source=None)


@dataclasses.dataclass(frozen=True, eq=False)
class _Sum:
    terms: tuple[_Term, ...]
    folded: bool  # a product was distributed over a sum or composed with another map
    dtype: np.dtype | None


class FoldLinearPass(WaveoptPass):
    """Rewrite each linear expression of a Loop body as per-step products plus one hoistable sum.

    In every Loop body (nested ones included):

    1. A *linear expression* is built from Add, Sub, Neg, Identity, MatMul/Gemm with a
       constant 2-D weight (Gemm: transA=0, alpha=beta=1), Mul by a constant scalar, and
       the rank-1 ``Mul(s, w)`` of a width-1 value s with a constant row w. Its leaves are
       the other values; a value hoist_aux_projections can hoist is always a leaf.
    2. A MatMul of a sum distributes over the sum when one of its terms is a constant, a
       hoistable leaf, or itself a product of a constant map (whose matrices then compose,
       in float64: ``(s·w)·W = s·(w·W)``, still a rank-1 term), and the per-step MACs do
       not grow: composed [K1, N] maps (K1 > 1) plus one [K, N] product for the per-step
       leaves cost at most the [K, N] product of the sum. A sum of per-step leaves only
       (like ``h1 + h2``) stays the operand of one product.
    3. Each *root* (a linear value read by a non-linear node or a body output) is rebuilt,
       if rule 2 fired in it or its terms can merge, as
       ``per-step products + (hoistable products + constants)``: per-step leaves that meet
       the same matrix share one product (``(h1 + h2)·W``), a leaf met twice has its
       matrices added, width-1 leaves become ``Mul`` rank-1 terms, and the hoistable part
       is one sum that hoist_aux_projections can move out of the Loop.

    Roots that are already in that form are left alone, so the pass is idempotent; run
    hoist_aux_projections after it. Outside Loop bodies nothing changes.
    """

    name = "fold_linear"
    description = "compose linear maps and regroup sums by what the Loop can hoist (Loop bodies)"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        shapes = ShapeInfo(model)
        builder = Builder(model, "fold")
        rebuilt = 0
        for loop, body in list(loop_bodies(model.graph)):
            folder = _Folder(LoopScope(loop, body, shapes, model_opset(model)), builder)
            count = sum(folder.try_rebuild(value) for value in folder.roots())
            if count:
                remove_dead(outputs_of(folder.visited))  # and the weights nothing reads any more
                rebuilt += count
        if not rebuilt:
            return self.result(model)
        return self.result(model, f"rebuilt {rebuilt} linear expressions")


class _Folder:
    def __init__(self, scope: LoopScope, builder: Builder) -> None:
        self.scope = scope
        self.builder = builder
        self.visited: set[ir.Node] = set()
        self._memo: dict[ir.Value, _Sum] = {}

    # --- which values to rebuild ---------------------------------------------------------
    def roots(self) -> list[ir.Value]:
        body = self.scope.body
        outputs = set(body.outputs)
        found = []
        for node in body:
            if not is_onnx_op(node, *_LINEAR) or len(node.outputs) != 1:
                continue
            value = node.outputs[0]
            if self.scope.hoistable(value):
                continue
            if value in outputs or any(not self._expands(c, value) for c in value.consumers()):
                found.append(value)
        return found

    def _expands(self, consumer: ir.Node, value: ir.Value) -> bool:
        """Does ``consumer`` read ``value`` as part of a linear expression?"""
        if consumer.graph is not self.scope.body or not is_onnx_op(consumer, *_LINEAR):
            return False
        if consumer.op_type in ("MatMul", "Gemm"):
            return consumer.inputs[1] is not value and self._weight(consumer) is not None
        if consumer.op_type == "Mul":
            return self._mul_factor(consumer) is not None
        return True

    # --- expansion -------------------------------------------------------------------------
    def expand(self, value: ir.Value) -> _Sum:
        if value not in self._memo:
            self._memo[value] = self._expand(value)
        return self._memo[value]

    def _leaf(self, value: ir.Value) -> _Sum:
        return _Sum((_Term(leaf=value, hoistable=self.scope.hoistable(value), source=value),), False, None)

    def _expand(self, value: ir.Value) -> _Sum:
        array = const_array(value)
        if array is not None and array.dtype.kind == "f":
            return _Sum((_Term(const=array.astype(np.float64)),), False, array.dtype)
        node = value.producer()
        if (self.scope.hoistable(value) or node is None or node.graph is not self.scope.body
                or not is_onnx_op(node, *_LINEAR) or len(node.outputs) != 1):
            return self._leaf(value)
        result = self._expand_node(node)
        if result is None or not (result.folded or any(
                t.const is not None or t.hoistable or t.matrix is not None for t in result.terms)):
            return self._leaf(value)  # a sum of per-step values only (like h' = (h - n)·z + n)
        self.visited.add(node)
        return result

    def _expand_node(self, node: ir.Node) -> _Sum | None:
        op, inputs = node.op_type, node.inputs
        if op in ("Add", "Sub"):
            a, b = self.expand(inputs[0]), self.expand(inputs[1])
            if op == "Sub":
                b = _Sum(tuple(t.times(-1.0) for t in b.terms), b.folded, b.dtype)
            return self._sum([a, b])
        if op == "Neg":
            a = self.expand(inputs[0])
            return _Sum(tuple(t.times(-1.0) for t in a.terms), a.folded, a.dtype)
        if op == "Identity":
            return self.expand(inputs[0])
        if op in ("MatMul", "Gemm"):
            weight = self._weight(node)
            if weight is None:
                return None
            product = self._times(inputs[0], weight, node.outputs[0] if op == "MatMul" else None)
            if op == "Gemm" and len(inputs) > 2 and inputs[2] is not None:
                return self._sum([product, self.expand(inputs[2])])
            return product
        if op == "Mul":
            factor = self._mul_factor(node)
            if factor is None:
                return None
            other, c = factor
            x = self.expand(other)
            if c.size == 1:
                return _Sum(tuple(t.times(float(c.reshape(-1)[0])) for t in x.terms), x.folded, x.dtype)
            return self._times(other, c.reshape(1, -1).astype(np.float64), None, dtype=c.dtype)
        return None

    def _weight(self, node: ir.Node) -> np.ndarray | None:
        """The [K, N] constant map of a MatMul/Gemm, as float64, or None."""
        array = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
        if array is None or array.ndim != 2 or array.dtype.kind != "f":
            return None
        if node.op_type == "Gemm":
            attrs = node.attributes
            if attrs.get_int("transA", 0) or attrs.get_float("alpha", 1.0) != 1.0 \
                    or attrs.get_float("beta", 1.0) != 1.0:
                return None
            if attrs.get_int("transB", 0):
                array = array.T
        return array

    def _mul_factor(self, node: ir.Node) -> tuple[ir.Value, np.ndarray] | None:
        """(x, c) for Mul(x, c) by a constant scalar, or by a [1, N] row of a width-1 x."""
        shapes = self.scope.shapes
        for i in (0, 1):
            c, x = const_array(node.inputs[i]), node.inputs[1 - i]
            if c is None or c.dtype.kind != "f" or const_array(x) is not None:
                continue
            x_rank = shapes.rank(x)
            if x_rank is None or c.ndim > x_rank:
                continue
            if c.size == 1:
                return x, c
            if shapes.last_dim(x) == 1 and c.ndim >= 1 and all(d == 1 for d in c.shape[:-1]):
                return x, c
        return None

    def _times(self, x: ir.Value, weight: np.ndarray, product: ir.Value | None,
               dtype: np.dtype | None = None) -> _Sum:
        """The expansion of ``x @ weight``; ``product`` is the existing value of it, if any."""
        dtype = weight.dtype if dtype is None else dtype
        w = weight.astype(np.float64)
        inner = self.expand(x)
        foldable = len(inner.terms) > 1 and any(
            t.const is not None or t.hoistable or t.matrix is not None for t in inner.terms
        ) and _distributed_cost(inner.terms, w) <= w.size
        if not foldable:  # x stays the operand of one product
            return _Sum((_Term(leaf=x, matrix=w, hoistable=self.scope.hoistable(x), source=product),),
                        False, dtype)
        terms = []
        for t in inner.terms:
            if t.const is not None:
                terms.append(_Term(const=_const_times(t.const, w)))
            elif t.matrix is None:
                terms.append(_Term(leaf=t.leaf, matrix=t.scale * w, hoistable=t.hoistable))
            elif _composes_cheaply(t.matrix, w) or t.source is None:
                terms.append(_Term(leaf=t.leaf, matrix=t.matrix @ w, hoistable=t.hoistable))
            else:  # a hoistable product that would grow: hoist the inner product and map it
                terms.append(_Term(leaf=t.source, matrix=w, hoistable=t.hoistable))
        return _Sum(tuple(terms), True, dtype)

    def _sum(self, parts: list[_Sum]) -> _Sum | None:
        """The terms of a sum, unless it broadcasts a term along the last axis."""
        terms = tuple(t for p in parts for t in p.terms)
        widths = {self._width(t) for t in terms if t.const is None}
        if len(widths) != 1 or None in widths:
            return None  # a broadcast along the last axis, or unknown widths: not a plain sum
        (n,) = widths
        for t in terms:
            if t.const is not None and t.const.ndim and t.const.shape[-1] not in (1, n):
                return None
        dtypes = {p.dtype for p in parts if p.dtype is not None}
        if len(dtypes) > 1:
            return None
        return _Sum(terms, any(p.folded for p in parts), next(iter(dtypes), None))

    def _width(self, t: _Term) -> int | None:
        return t.matrix.shape[1] if t.matrix is not None else self.scope.shapes.last_dim(t.leaf)

    # --- rebuilding ---------------------------------------------------------------------------
    def try_rebuild(self, root: ir.Value) -> bool:
        total = self.expand(root)
        if len(total.terms) == 1 and total.terms[0].source is root:
            return False
        dtype = total.dtype if total.dtype is not None else _np_dtype(root)
        if dtype is None or dtype.kind != "f":
            return False
        consts = [t.const for t in total.terms if t.const is not None]
        step = _merge_leaves([t for t in total.terms if t.const is None and not t.hoistable])
        hoist = _merge_leaves([t for t in total.terms if t.const is None and t.hoistable])
        n_leaf_terms = sum(1 for t in total.terms if t.const is None)
        step_groups = _group(step)
        hoist_groups = _group(hoist)
        bias = sum(consts[1:], consts[0]) if consts else None
        combine = self._sum_hoistable(hoist_groups)  # else each hoistable term stays on its own
        bias_in_hoist = bool(bias is not None and hoist_groups and combine
                             and self._can_take_bias(hoist_groups, bias))
        merges = (len(consts) > 1 or bias_in_hoist or len(step) + len(hoist) < n_leaf_terms
                  or (combine and (len(hoist_groups) > 1 or any(len(g[2]) > 1 for g in hoist_groups)))
                  or any(len(terms) > 1 and key[0] == "M" for key, _, terms in step_groups))
        if not (total.folded or merges):
            return False

        producer = root.producer()
        new_nodes: list[ir.Node] = []
        emit = _Emitter(self, producer, dtype, new_nodes, root)
        pieces = [emit.group(key, matrix, leaves) for key, matrix, leaves in step_groups]
        hoisted = [emit.group(key, matrix, leaves) for key, matrix, leaves in hoist_groups]
        if bias is not None:
            if bias_in_hoist:
                hoisted.append(emit.constant(bias))
            else:
                pieces.append(emit.constant(bias))
        if hoisted:
            pieces.extend([emit.add_all(hoisted)] if combine else hoisted)
        result = emit.add_all(pieces)
        self.scope.body.insert_before(producer, new_nodes)
        for node in new_nodes:
            self.scope.classify(node)
        root.replace_all_uses_with(result, replace_graph_outputs=True)
        self._memo.clear()
        return True

    def _can_take_bias(self, groups, bias: np.ndarray) -> bool:
        forms = [self.scope.form(t.leaf) for _, _, terms in groups for t in terms]
        ranks = [f.rank for f in forms if isinstance(f, Rows)]
        return not ranks or bias.ndim <= min(ranks)

    def _sum_hoistable(self, groups) -> bool:
        forms = {self.scope.form(t.leaf) for _, _, terms in groups for t in terms}
        return len({f for f in forms if f is not INVARIANT}) <= 1


def _distributed_cost(terms, w: np.ndarray) -> int:
    """Per-step MACs of ``sum(terms) @ w`` distributed over the terms: hoistable terms and
    constants cost nothing, rank-1 terms are elementwise, per-step leaves share one product."""
    cost = sum(t.matrix.shape[0] * w.shape[1] for t in terms
               if t.matrix is not None and not t.hoistable and t.matrix.shape[0] > 1)
    if any(t.matrix is None and t.const is None and not t.hoistable for t in terms):
        cost += w.size
    return cost


def _composes_cheaply(a: np.ndarray, w: np.ndarray) -> bool:
    """Does x·(a·w) cost no more than x·a alone ([K1, K] then [K, N]: N <= K)?"""
    return a.shape[0] * w.shape[1] <= a.size


def _const_times(c: np.ndarray, w: np.ndarray) -> np.ndarray:
    """c @ w for a constant c that may broadcast along its last axis."""
    if c.ndim == 0 or (c.shape[-1] == 1 and w.shape[0] != 1):
        return c * w.sum(axis=0)
    return c @ w


def _np_dtype(value: ir.Value) -> np.dtype | None:
    if value.type is None or value.type.dtype is None:
        return None
    try:
        return value.type.dtype.numpy()
    except Exception:
        return None


def _merge_leaves(terms: list[_Term]) -> list[_Term]:
    """One term per (leaf, kind): matrices of the same leaf add, as do identity scales."""
    merged: dict[tuple, _Term] = {}
    for t in terms:
        key = (t.leaf, t.matrix is None)
        if key not in merged:
            merged[key] = t
            continue
        m = merged[key]
        if t.matrix is None:
            merged[key] = dataclasses.replace(m, scale=m.scale + t.scale, source=None)
        else:
            merged[key] = dataclasses.replace(m, matrix=m.matrix + t.matrix, source=None)
    return list(merged.values())


def _group(terms: list[_Term]) -> list[tuple[tuple, np.ndarray | None, list]]:
    """Terms sharing a matrix (or an identity scale), in first-seen order: (key, matrix, leaves)."""
    groups: dict[tuple, tuple[tuple, np.ndarray | None, list]] = {}
    for t in terms:
        if t.matrix is None:
            key = ("I", t.scale)
        else:
            key = ("M", t.matrix.shape, hashlib.sha1(np.ascontiguousarray(t.matrix).tobytes()).hexdigest())
        if key not in groups:
            groups[key] = (key, t.matrix, [])
        groups[key][2].append(t)
    return list(groups.values())


class _Emitter:
    """Builds the nodes of one rebuilt root (inserted before the root's producer)."""

    def __init__(self, folder: _Folder, like: ir.Node, dtype: np.dtype, nodes: list, root: ir.Value):
        self.folder, self.like, self.dtype, self.nodes, self.root = folder, like, dtype, nodes, root
        self.builder = folder.builder

    def _node(self, op: str, inputs, width: int | None) -> ir.Value:
        node = self.builder.node(op, inputs, like=self.like)
        dims = dims_with(self.root, self.folder.scope.shapes)
        if dims is not None and width is not None:
            dims = [*dims[:-1], width]
        set_shape(node.outputs[0], dims, like=self.root)
        self.nodes.append(node)
        return node.outputs[0]

    def constant(self, array: np.ndarray) -> ir.Value:
        return self.builder.constant(array.astype(self.dtype), "folded")

    def add_all(self, values: list[ir.Value], width: int | None = None) -> ir.Value:
        """values[0] + values[1] + ..., of the root's width unless ``width`` says otherwise."""
        total = values[0]
        for v in values[1:]:
            total = self._node("Add", [total, v], width)
        return total

    def group(self, key, matrix: np.ndarray | None, terms: list[_Term]) -> ir.Value:
        if len(terms) == 1 and terms[0].source is not None:
            return terms[0].source  # already computed as it is
        leaves = [t.leaf for t in terms]
        shapes = self.folder.scope.shapes
        width = shapes.last_dim(leaves[0])
        x = self.add_all(leaves, width) if len(leaves) > 1 else leaves[0]
        if matrix is None:
            scale = key[1]
            if scale == 1.0:
                return x
            if scale == -1.0:
                return self._node("Neg", [x], width)
            return self._node("Mul", [x, self.constant(np.asarray(scale))], width)
        if matrix.shape[0] == 1 and shapes.last_dim(leaves[0]) == 1:
            return self._node("Mul", [x, self.builder.constant(matrix.astype(self.dtype), "rank1")],
                              matrix.shape[1])
        return self._node("MatMul", [x, self.builder.constant(matrix.astype(self.dtype), "folded_weight")],
                          matrix.shape[1])
