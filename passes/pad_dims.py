"""Zero-pad hidden and feature widths inside Loop bodies to multiples of 16 (32 for AVX-512).

before (our export of rnn 200, fc 136, aux 24)::

    aux_t = Gather(aux_seq [T, B, 96], t);  a2 = Slice(aux_t, 24, 48)
    i_r, i_z, i_n = Split(Gemm(Concat(x [B, 200], a2), W_ih [600, 224], b_ih))      # 200 each
    h_r, h_z, h_n = Split(Gemm(h [B, 200], W_hh [600, 200], b_hh))
    ... gates ...;  h' = (h - n) * z + n                        h carried, h_init [B, 200]

after (multiple 16)::

    aux_seq' = Concat(Pad(Split(aux_seq, 24 x 4)))  [T, B, 127]      once, before the Loop
    aux_t = Gather(aux_seq', t);  a2 = Slice(aux_t, 31, 63)                 # [B, 32]
    i_r, i_z, i_n = Split(Gemm(Concat(x [B, 208], a2), W_ih' [624, 240], b_ih' [624]))
    h_r, h_z, h_n = Split(Gemm(h [B, 208], W_hh' [624, 208], b_hh' [624]))  # 208 each
    ... gates ...;  h' = (h - n) * z + n                        h_init' = Pad(h_init) [B, 208]
    (a Loop output that carries a padded width is sliced back after the Loop)

Exact: padded weight rows/columns and bias entries are zero, so every real unit sees the
same products (only fp32 summation order may change), and padded units never reach a
real one: a padded K column meets a zero weight row, a padded state unit stays 0.
Not applicable (unchanged) without a Loop whose body multiplies by a constant weight, or
when every hidden width is aligned already or may not be padded (rule 3 below).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from waveopt.graph import loop_nodes
from waveopt.passes._ir import Builder, Cursor, const_array, remove_dead
from waveopt.passes._analysis.loop_features import LoopFeatures, shape_hints
from waveopt.passes.base import WaveoptPass

__all__ = ["PadDimsPass"]

_FINITE = None  # the value of padded units: a float is exactly that value, None some finite value
_NONZERO_STATE = "a carried state would not stay 0 in its padded units"


class PadDimsPass(WaveoptPass):
    """Pad the feature (last) axis of Loop-body values with zero units.

    The body's feature axes are cut into segments (a Split's parts, a Concat's inputs);
    segments tied together by elementwise ops, Gather, Split/Slice/Concat or the carried
    state form one width group (see ``_analysis/loop_features.py``). Then:

    1. A group is padded up to a multiple of ``multiple`` when it holds the output (N)
       of a MatMul/Gemm by a constant weight: hidden units, each GRU gate block on its
       own, dense-layer outputs.
    2. A matmul input (K) whose total is still unaligned is completed by padding its
       last segment that is not hidden and can be padded before the Loop (an aux slice:
       24 -> 32, padded in aux_seq), unless K < ``multiple``.
    3. Never padded: a group any value of which reaches an op that is not modeled
       (the logits that Softmax/sampling read, Reshape, ...), is a broadcast operand, or
       whose padded units of a carried state would not stay 0 (see below).
    4. Weights get zero rows/columns, constant operands zero entries, Split sizes and
       Slice bounds move to the padded layout. Values from outside the body (aux_seq,
       the initial states) are padded once before the Loop; one that only this body
       reads and that is a product by a constant weight (a hoisted projection) gets
       zero weight columns instead. A body value made by an op that is not modeled is
       padded at every step. Loop outputs are sliced back after the Loop, so the
       model's inputs and outputs keep their shapes.

    Why the padded units of a GRU state stay 0 (the pass checks it on every model by
    propagating the padded units' value through the body): with h's padded units 0 at
    step t, the padded gate pre-activations are 0 (zero weight rows, zero biases), so
    r = z = sigmoid(0) = 0.5, n = tanh(0 + 0·r) = 0 and h' = (h - n)·z + n
    = (0 - 0)·0.5 + 0 = 0; the initial state is padded with 0.
    """

    name = "pad_dims"
    description = "zero-pad hidden/feature widths in Loop bodies to multiples of 16 (or 32)"

    def __init__(self, multiple: int = 16) -> None:
        super().__init__()
        if isinstance(multiple, bool) or int(multiple) != multiple or multiple < 2:
            raise ValueError(f"multiple must be an integer >= 2, not {multiple!r}")
        self.multiple = int(multiple)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        loops = list(loop_nodes(model.graph))
        if not loops:
            return self.result(model, note="no Loop")
        if model.graph.opset_imports.get("", 0) < 13:
            return self.result(model, note="opset below 13")
        hints = shape_hints(model)
        builder = Builder(model, "pad")
        done, notes = [], []
        for loop in loops:
            padding = _Padding(LoopFeatures(loop, hints), self.multiple)
            if padding.pads:
                padding.rewrite(builder)
                done.append(padding.describe())
            else:
                notes.append(padding.why)
        note = "; ".join(dict.fromkeys(notes))
        return self.result(model, "; ".join(done), note)


class _Padding:
    """Rules 1-3 for one Loop body (``pads``: group -> units to add), and rule 4."""

    def __init__(self, features: LoopFeatures, multiple: int) -> None:
        self.f, self.multiple = features, multiple
        self.pads: dict = {}
        self.kept = self.why = ""
        if not features.matmuls:
            self.why = "no matmul with a constant weight in a Loop body"
            return
        blocked = features.blocked_groups()
        hidden = features.hidden_groups()
        vetoed: set = set()
        while True:
            pads = {g: self._round_up(features.group_width(g)) - features.group_width(g)
                    for g in hidden - blocked.keys() - vetoed}
            self._complete_k(pads, hidden | blocked.keys() | vetoed)
            self.pads = {g: p for g, p in pads.items() if p}
            bad = self._nonzero_states() if self.pads else set()
            if not bad:
                break
            vetoed |= bad
        reasons: dict[str, list[int]] = {}
        for g in hidden & (blocked.keys() | vetoed):
            if features.group_width(g) % multiple:
                reasons.setdefault(blocked.get(g, _NONZERO_STATE), []).append(features.group_width(g))
        self.kept = "; ".join(f"{why}: {', '.join(map(str, sorted(w)))}" for why, w in reasons.items())
        if not self.pads:
            aligned = sorted({features.group_width(g) for g in hidden - blocked.keys() - vetoed})
            parts = [f"hidden widths {aligned} are multiples of {multiple} already"] if aligned else []
            parts += [f"not padded ({self.kept})"] if self.kept else []
            self.why = "; ".join(parts) or "nothing to pad"

    def _round_up(self, n: int) -> int:
        return -(-n // self.multiple) * self.multiple

    def _complete_k(self, pads: dict, fixed: set) -> None:
        """Rule 2: complete each unaligned K with its last free segment."""
        f = self.f
        for mm in f.matmuls:
            a = mm.inputs[0]
            groups, widths = f.groups_of(a), [w for _, w in f.segments(a)]
            total = sum(w + pads.get(g, 0) for g, w in zip(groups, widths))
            if total % self.multiple == 0 or sum(widths) < self.multiple:
                continue
            free = [g for g in groups if g not in fixed and g not in pads and not f.per_step(g)]
            if free:
                pads[free[-1]] = self._round_up(total) - total

    # --- the value of padded units ------------------------------------------------------------
    def _nonzero_states(self) -> set:
        """Padded groups in which a carried state's padded units would not stay 0: the units'
        value propagated through the body from zeros (padded inputs, weights, constants)."""
        f = self.f
        value: dict = {}

        def get(v, i):
            return value.get((v, i), 0.0)  # a value from outside the modeled nodes: zero-padded

        for node in f.body:
            if node not in f.modeled:
                continue
            op = node.op_type
            if op in ("Concat", "Split", "Slice"):
                for whole, piece, offset, by in f.part:
                    if by is node:
                        first = f.segment_at(whole, offset)
                        for i in range(len(f.segments(piece))):
                            if op == "Concat":
                                value[(whole, first + i)] = get(piece, i)
                            else:
                                value[(piece, i)] = get(whole, first + i)
                continue
            out = node.outputs[0]
            for i in range(len(f.segments(out))):
                if op in ("Gather", "Relu", "Tanh", "Sigmoid", "Identity", "Neg"):
                    value[(out, i)] = _unary(op, get(node.inputs[0], i))
                else:
                    value[(out, i)] = self._combined(node, i, get)
        return {f.group(v, i) for v in f.body.outputs[1:1 + f.n_carried] if v in f.axes
                for i in range(len(f.segments(v))) if f.group(v, i) in self.pads and get(v, i) != 0.0}

    def _combined(self, node: ir.Node, i: int, get) -> float | None:
        op = node.op_type
        if op == "MatMul" or op == "Gemm" and (len(node.inputs) < 3 or node.inputs[2] is None):
            return 0.0  # zero weight columns
        if op == "Gemm":
            c = self._operand(node, 2, i, get)
            return _FINITE if c is _FINITE else _f32(np.float32(node.attributes.get_float("beta", 1.0)) * c)
        a, b = self._operand(node, 0, i, get), self._operand(node, 1, i, get)
        if op == "Mul" and (a == 0.0 or b == 0.0):
            return 0.0  # zero times a finite value
        if a is _FINITE or b is _FINITE:
            return _FINITE
        x, y = np.float32(a), np.float32(b)
        return _f32(x + y if op == "Add" else x - y if op == "Sub" else x * y)

    def _operand(self, node: ir.Node, k: int, i: int, get) -> float | None:
        if (node, k) in self.f.broadcast:
            array = const_array(node.inputs[k])
            if array is not None and array.size == 1 and np.isfinite(array).all():
                return _f32(array.reshape(-1)[0])
            return _FINITE
        return get(node.inputs[k], i)

    # --- rule 4: the rewrite ------------------------------------------------------------------
    def layout(self, v: ir.Value) -> list[tuple[int, int, int]]:
        """[(start, width, pad)] of v's segments."""
        return [(s, w, self.pads.get(self.f.group(v, i), 0)) for i, (s, w) in enumerate(self.f.segments(v))]

    def padded(self, v: ir.Value) -> bool:
        return v in self.f.axes and any(p for *_, p in self.layout(v))

    def new_width(self, v: ir.Value) -> int:
        return sum(w + p for _, w, p in self.layout(v))

    def rewrite(self, builder: Builder) -> None:
        self.macs_before = self._macs()
        self._builder, self._cache, dead = builder, {}, []
        self._relayout_modeled(dead)
        self._unpad_loop_outputs()
        relaid = self._relayout_entering(dead)
        self._widen_shapes(relaid)
        remove_dead(dead)
        self.macs_after = self._macs()

    def _relayout_modeled(self, dead: list[ir.Value]) -> None:
        """Weights, Split sizes and Slice bounds, while every input is still the analysed value."""
        f = self.f
        for node in [n for n in f.body if n in f.modeled]:
            emit = self._builder.at(node, like=node)
            if node.op_type in ("Gemm", "MatMul"):
                self._pad_weight(node, dead)
            elif node.op_type == "Split" and self.padded(node.inputs[0]):
                sizes = [self.new_width(o) for o in node.outputs]
                if len(node.inputs) > 1 and node.inputs[1] is not None:
                    dead.append(node.inputs[1])
                    node.replace_input_with(1, emit.ints(sizes, "split"))
                elif len(set(sizes)) != 1:
                    node.resize_inputs(2)
                    node.replace_input_with(1, emit.ints(sizes, "split"))
                    node.attributes.pop("num_outputs", None)
            elif node.op_type == "Slice" and self.padded(node.inputs[0]):
                whole, piece = node.inputs[0], node.outputs[0]
                start = sum(w + p for s, w, p in self.layout(whole) if s < f.part_offset(whole, piece))
                dead.extend(node.inputs[1:3])
                node.replace_input_with(1, emit.ints([start], "start"))
                node.replace_input_with(2, emit.ints([start + self.new_width(piece)], "end"))

    def _unpad_loop_outputs(self) -> None:
        """Loop outputs (final states, scan outputs) are sliced back after the Loop."""
        f = self.f
        for k, v in enumerate(f.body.outputs[1:]):
            if not self.padded(v):
                continue
            out = f.loop.outputs[k]
            if out.uses() or out.is_graph_output():
                emit = self._builder.at(f.loop, after=True, like=f.loop)
                _unpad_uses(emit, out, self.layout(v))
            if out.shape is not None and len(out.shape) == f.axes[v].rank + (k >= f.n_carried):
                out.shape = _with_last(out.shape, self.new_width(v))

    def _relayout_entering(self, dead: list[ir.Value]) -> set[ir.Value]:
        """Values entering the padded layout from outside the modeled nodes; returns them."""
        f = self.f
        relaid = set()
        for v in list(f.axes):
            if not self.padded(v) or (f.in_body(v) and v.producer() in f.modeled):
                continue
            layout, rank = self.layout(v), f.axes[v].rank
            if v in f.carried_in:  # the initial state, padded once before the Loop
                k = 2 + f.carried_in.index(v)
                f.loop.replace_input_with(k, self._outside(f.loop.inputs[k], layout, rank))
                continue
            array = const_array(v)
            if array is not None:
                new = self._cached(("const", v, tuple(layout)), lambda: self._builder.constant(
                    _pad_array(array, layout), v.name or "const"))
            elif not f.in_body(v):
                new = self._outside(v, layout, rank)
            else:  # made in the body by an op that is not modeled: padded at every step
                producer = v.producer()
                new = _pad_value(self._builder.at(producer, after=True, like=producer), v, layout, rank)
            for node, index in list(v.uses()):
                if node.graph is f.body and (node, index) in f.feature_uses:
                    node.replace_input_with(index, new)
            relaid.add(v)
            dead.append(v)
        return relaid

    def _widen_shapes(self, relaid: set[ir.Value]) -> None:
        """The padded values made in the body (or carried out of it) get their new width."""
        f = self.f
        for v in f.axes:
            if v not in relaid and self.padded(v) and (f.in_body(v) or v in f.body.outputs) \
                    and v.shape is not None and len(v.shape) == f.axes[v].rank:
                v.shape = _with_last(v.shape, self.new_width(v))

    def _cached(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def _outside(self, value: ir.Value, layout, rank: int) -> ir.Value:
        """``value`` (defined outside the body) padded just before the Loop, or, when only
        this body reads it and it is a product by a constant weight (a hoisted projection),
        computed padded by zero weight columns."""
        loop = self.f.loop
        return self._cached(("outside", value, tuple(layout)), lambda: value if self._pad_product(value, layout)
                            else _pad_value(self._builder.at(loop, like=loop), value, layout, rank))

    def _pad_product(self, value: ir.Value, layout) -> bool:
        """MatMul(x, W) / Gemm(x, W[, c]) / Add(that, bias) with constant W, c, bias: pad
        their N axis in place. Only when every reader of the chain is this body."""
        body = self.f.body
        if value.is_graph_output() or not value.uses() or any(n.graph is not body for n, _ in value.uses()):
            return False
        node, bias_at = value.producer(), None
        if node is not None and node.op_type == "Add" and len(node.inputs) == 2:
            arrays = [const_array(v) for v in node.inputs]
            bias_at = next((i for i, a in enumerate(arrays) if a is not None and a.ndim >= 1), None)
            if bias_at is None or arrays[bias_at].shape[-1] != sum(w for _, w, _ in layout):
                return False
            product = node.inputs[1 - bias_at]
            if product.is_graph_output() or len(product.uses()) != 1:
                return False
            node = product.producer()
        if node is None or node.graph is not self.f.loop.graph or node.op_type not in ("MatMul", "Gemm"):
            return False
        weight = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
        trans = node.op_type == "Gemm" and node.attributes.get_int("transB", 0) != 0
        c = node.inputs[2] if node.op_type == "Gemm" and len(node.inputs) > 2 else None
        c_array = const_array(c) if c is not None else None
        if weight is None or weight.ndim != 2 or weight.dtype != np.float32 or (c is not None and (
                c_array is None or c_array.ndim < 1 or c_array.shape[-1] == 1)) or \
                (node.op_type == "Gemm" and node.attributes.get_int("transA", 0)):
            return False

        def replace(at: ir.Node, index: int, array: np.ndarray, base: str) -> None:
            new = self._builder.constant(array, base)
            old = at.inputs[index]
            at.replace_input_with(index, new)
            remove_dead([old])

        padded = _pad_array(weight.T if trans else weight, layout)
        replace(node, 1, padded.T if trans else padded, node.inputs[1].name or "weight")
        if c_array is not None:
            replace(node, 2, _pad_array(c_array, layout), c.name or "bias")
        if bias_at is not None:
            replace(value.producer(), bias_at, _pad_array(const_array(value.producer().inputs[bias_at]), layout),
                    value.producer().inputs[bias_at].name or "bias")
        for v in {value, node.outputs[0]}:
            if v.shape is not None:
                v.shape = _with_last(v.shape, sum(w + p for _, w, p in layout))
        return True

    def _pad_weight(self, node: ir.Node, dead: list) -> None:
        k_layout, n_layout = self.layout(node.inputs[0]), self.layout(node.outputs[0])
        if not any(p for *_, p in k_layout + n_layout):
            return
        weight = node.inputs[1]
        trans = node.op_type == "Gemm" and node.attributes.get_int("transB", 0) != 0

        def make():
            array = const_array(weight)
            kn = array.T if trans else array  # [K, N]
            padded = _pad_array(_pad_array(kn.T, k_layout).T, n_layout)
            return self._builder.constant(padded.T if trans else padded, weight.name or "weight")

        node.replace_input_with(1, self._cached(("weight", weight, tuple(k_layout), tuple(n_layout), trans), make))
        dead.append(weight)

    def _macs(self) -> int:
        return sum(const_array(mm.inputs[1]).size for mm in self.f.matmuls)

    def describe(self) -> str:
        f = self.f
        carried = {g for v in f.carried_in if v in f.axes for g in f.groups_of(v)}
        labels = [f"{f.group_width(g)}->{f.group_width(g) + p}" + (" (state)" if g in carried else "")
                  for g, p in self.pads.items()]
        counts: dict[str, int] = {}
        for label in sorted(labels, key=lambda s: (-int(s.split("-")[0]), s)):
            counts[label] = counts.get(label, 0) + 1
        listed = ", ".join(label + (f" x{n}" if n > 1 else "") for label, n in counts.items())
        growth = (self.macs_after - self.macs_before) / max(self.macs_before, 1)
        kept = f"; not padded ({self.kept})" if self.kept else ""
        return (f"padded Loop {f.loop.name or 'body'} to multiples of {self.multiple}: {listed}; "
                f"matmul weights per step {self.macs_before} -> {self.macs_after} ({growth:+.1%}){kept}")


def _f32(x) -> float:
    return float(np.float32(x))


def _unary(op: str, x: float | None) -> float | None:
    if x is _FINITE:
        return _FINITE
    x = np.float32(x)
    if op == "Relu":
        return _f32(max(x, np.float32(0)))
    if op == "Tanh":
        return _f32(np.tanh(x))
    if op == "Sigmoid":
        return _f32(np.float32(1) / (np.float32(1) + np.exp(-x)))
    return _f32(-x if op == "Neg" else x)


def _with_last(shape: ir.Shape, width: int) -> ir.Shape:
    return ir.Shape([*list(shape)[:-1], width])


def _pad_array(array: np.ndarray, layout: list[tuple[int, int, int]]) -> np.ndarray:
    """``pad`` zeros after each (start, width) segment of the last axis."""
    pieces = []
    for start, width, pad in layout:
        pieces.append(array[..., start:start + width])
        pieces.append(np.zeros(array.shape[:-1] + (pad,), array.dtype))
    return np.concatenate(pieces, axis=-1)


def _pad_value(emit: Cursor, value: ir.Value, layout: list[tuple[int, int, int]], rank: int) -> ir.Value:
    """Nodes padding ``value``'s last-axis segments with zeros: Pad, or Split + Pads + Concat."""
    def pad(v: ir.Value, amount: int) -> ir.Value:
        return emit.one("Pad", [v, emit.ints([0] * (2 * rank - 1) + [amount], "pads")], "pad")

    if all(p == 0 for *_, p in layout[:-1]):
        padded = pad(value, layout[-1][2])
    else:
        parts = emit.op("Split", [value, emit.ints([w for _, w, _ in layout], "split")], len(layout), "split",
                        axis=-1)
        padded = emit.one("Concat", [pad(v, p) if p else v for v, (*_, p) in zip(parts, layout)], "concat",
                          axis=-1)
    if value.shape is not None:  # later passes (and lower_native) read the width
        padded.type, padded.shape = value.type, _with_last(value.shape, sum(w + p for _, w, p in layout))
    return padded


def _unpad_uses(emit: Cursor, value: ir.Value, layout: list[tuple[int, int, int]]) -> None:
    """Make every user of ``value`` (graph outputs included, by name) read its real units:
    a Slice, or a Gather of the real units, right after it."""
    uses, was_output = list(value.uses()), value.is_graph_output()
    if all(p == 0 for *_, p in layout[:-1]):
        real = emit.one("Slice", [value, emit.ints([0], "start"), emit.ints([sum(w for _, w, _ in layout)], "end"),
                                  emit.ints([-1], "axes")], "unpad")
    else:
        index, position = [], 0
        for _, width, pad in layout:
            index.extend(range(position, position + width))
            position += width + pad
        real = emit.one("Gather", [value, emit.ints(index, "real_units")], "unpad", axis=-1)
    real.type, real.shape = value.type, value.shape
    for node, i in uses:
        node.replace_input_with(i, real)
    if was_output:
        graph = value.graph
        for i, out in enumerate(graph.outputs):
            if out is value:
                graph.outputs[i] = real
        name = value.name
        value.name = emit.builder.fresh(f"{name}_padded")
        real.name = name
