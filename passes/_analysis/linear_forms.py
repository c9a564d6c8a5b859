"""Linear forms of Loop-body values: which sources, times which matrices, plus a constant.

A value ``v`` [B, n] of a Loop body is *linear* when ``v = Σ_k source_k · M_k + c`` for
sources the caller designates (loop-carried states, recognised cell outputs, per-step
rows ``Gather(P, t)`` of outer tensors, ...) and constant matrices ``M_k`` [width_k, n]
and vector ``c`` [n]. :class:`LinearForms` computes that form through Gemm, MatMul with
a constant weight, Add/Sub, Mul by a constant vector or of a [B, 1] source by a constant
row, Concat / Slice / Split on the last axis, Identity, Squeeze/Unsqueeze of [B]-shaped
sources — exactly (products in float64) — or says the value is not linear.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable

import numpy as np
import onnx_ir as ir

from waveopt.passes._ir import constant_float64

__all__ = ["LinearForm", "LinearForms"]


@dataclasses.dataclass
class LinearForm:
    """``Σ source · terms[source] + const``; every matrix has ``width`` columns."""

    width: int
    terms: dict[Hashable, np.ndarray]
    const: np.ndarray

    def __add__(self, other: "LinearForm") -> "LinearForm":
        if self.width != other.width:
            raise _NotLinear("widths differ")
        terms = dict(self.terms)
        for key, m in other.terms.items():
            terms[key] = terms[key] + m if key in terms else m
        return LinearForm(self.width, terms, self.const + other.const)

    def scaled(self, factor: np.ndarray | float) -> "LinearForm":
        """Multiply every column j by factor[j] (or a scalar)."""
        factor = np.broadcast_to(np.asarray(factor, dtype=np.float64), (self.width,))
        return LinearForm(self.width, {k: m * factor for k, m in self.terms.items()}, self.const * factor)

    def matmul(self, weight: np.ndarray) -> "LinearForm":
        """The form of ``self @ weight`` (weight [width, n])."""
        if weight.shape[0] != self.width:
            raise _NotLinear("matmul shapes")
        return LinearForm(weight.shape[1], {k: m @ weight for k, m in self.terms.items()}, self.const @ weight)

    def columns(self, start: int, stop: int) -> "LinearForm":
        return LinearForm(stop - start, {k: m[:, start:stop] for k, m in self.terms.items()},
                          self.const[start:stop])

    def sources(self) -> set:
        return {k for k, m in self.terms.items() if np.any(m)}


class _NotLinear(Exception):
    pass


def _int_list(value: ir.Value | None) -> list[int] | None:
    array = constant_float64(value)
    return None if array is None else [int(x) for x in np.atleast_1d(array)]


class LinearForms:
    """Memoised linear forms of a body's values over designated sources.

    ``source_of(value)`` returns ``(key, width)`` when ``value`` is a source, else None.
    """

    def __init__(self, source_of: Callable[[ir.Value], tuple[Hashable, int] | None]):
        self._source_of = source_of
        self._memo: dict[int, LinearForm | None] = {}

    def of(self, value: ir.Value) -> LinearForm | None:
        key = id(value)
        if key not in self._memo:
            self._memo[key] = None  # guards against cycles
            try:
                self._memo[key] = self._compute(value)
            except _NotLinear:
                self._memo[key] = None
        return self._memo[key]

    def _need(self, value: ir.Value | None) -> LinearForm:
        form = self.of(value) if value is not None else None
        if form is None:
            raise _NotLinear("operand")
        return form

    def _compute(self, value: ir.Value) -> LinearForm | None:
        source = self._source_of(value)
        if source is not None:
            key, width = source
            return LinearForm(width, {key: np.eye(width)}, np.zeros(width))
        node = value.producer()
        if node is None or node.domain not in ("", "ai.onnx"):
            return None
        rule = getattr(self, f"_op_{node.op_type}", None)
        return rule(node, value) if rule else None

    # --- rules: each returns the form of the node's output `value` ----------------------
    def _op_Identity(self, node, value):
        return self._need(node.inputs[0])

    def _op_Gemm(self, node, value):
        attrs = {k: a.value for k, a in node.attributes.items()}
        if attrs.get("transA", 0):
            return None
        weight = constant_float64(node.inputs[1])
        if weight is None or weight.ndim != 2:
            return None
        if attrs.get("transB", 0):
            weight = weight.T
        form = self._need(node.inputs[0]).matmul(weight * attrs.get("alpha", 1.0))
        c = node.inputs[2] if len(node.inputs) > 2 else None
        if c is None:
            return form
        bias = constant_float64(c)
        if bias is not None:
            return _plus_const(form, bias.reshape(-1) * attrs.get("beta", 1.0))
        return form + self._need(c).scaled(attrs.get("beta", 1.0))

    def _op_MatMul(self, node, value):
        weight = constant_float64(node.inputs[1])
        if weight is None or weight.ndim != 2:
            return None
        return self._need(node.inputs[0]).matmul(weight)

    def _op_Add(self, node, value):
        return self._sum(node, 1.0)

    def _op_Sub(self, node, value):
        return self._sum(node, -1.0)

    def _sum(self, node, sign):
        a, b = node.inputs
        ca, cb = constant_float64(a), constant_float64(b)
        if ca is not None and cb is not None:
            return None
        if cb is not None:
            return _plus_const(self._need(a), sign * cb.reshape(-1))
        if ca is not None:
            return _plus_const(self._need(b).scaled(sign), ca.reshape(-1))
        return self._need(a) + self._need(b).scaled(sign)

    def _op_Mul(self, node, value):
        a, b = node.inputs
        for x, y in ((a, b), (b, a)):
            factor = constant_float64(y)
            if factor is None:
                continue
            form = self._need(x)
            factor = factor.reshape(-1)
            if form.width == 1 and factor.size > 1:  # [B,1] * [1,n]: a rank-1 term
                return LinearForm(factor.size, {k: m * factor for k, m in form.terms.items()},
                                  form.const * factor)
            return form.scaled(factor)
        return None

    def _op_Concat(self, node, value):
        axis = node.attributes["axis"].value
        forms = [self._need(v) for v in node.inputs]
        if axis not in (-1, _rank(value) - 1):
            return None
        width = sum(f.width for f in forms)
        terms: dict = {}
        const = np.zeros(width)
        offset = 0
        for f in forms:
            for key, m in f.terms.items():
                full = terms.setdefault(key, np.zeros((m.shape[0], width)))
                full[:, offset : offset + f.width] += m
            const[offset : offset + f.width] = f.const
            offset += f.width
        return LinearForm(width, terms, const)

    def _op_Slice(self, node, value):
        form = self._need(node.inputs[0])
        starts, ends = _int_list(node.inputs[1]), _int_list(node.inputs[2])
        axes = _int_list(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] is not None else [0]
        steps = _int_list(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] is not None else [1]
        if None in (starts, ends, axes, steps) or len(starts) != 1 or steps != [1]:
            return None
        if axes[0] not in (-1, _rank(node.inputs[0]) - 1):
            return None
        start, stop, _ = slice(starts[0], ends[0]).indices(form.width)
        return form.columns(start, stop)

    def _op_Split(self, node, value):
        form = self._need(node.inputs[0])
        axis = node.attributes["axis"].value if "axis" in node.attributes else 0
        if axis not in (-1, _rank(node.inputs[0]) - 1):
            return None
        index = list(node.outputs).index(value)
        sizes = _int_list(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else None
        if sizes is None:
            n = len(node.outputs)
            if form.width % n:
                return None
            sizes = [form.width // n] * n
        start = sum(sizes[:index])
        return form.columns(start, start + sizes[index])


def _plus_const(form: LinearForm, const: np.ndarray) -> LinearForm:
    const = np.broadcast_to(const, (form.width,))
    return LinearForm(form.width, form.terms, form.const + const)


def _rank(value: ir.Value) -> int:
    if value.shape is None:
        return 2  # body values are [B, n] unless told otherwise
    return len(value.shape)
