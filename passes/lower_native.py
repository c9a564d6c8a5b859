"""Replace a WaveRNN Loop by the fused ``WaveRNNLoop`` op and concat-matmul(-relu) by ``FusedDense``.

Before (any form the exporter or the portable passes produce)::

    Loop(T) body: Gather(P, t) ... Gemm/MatMul ... GRU gate math x2 ... Relu(dense) x2
                  ... logits ... sampler(noise_t) -> sample, fed back
After::

    gi1 = FusedDense(P_1, ..., P_m, [M_1; ...; M_m], c)   = Σ P·M + c over the per-step
          sources P (likewise gi2, f1, f2: everything that does not depend on the
          recurrent state, computed for all T steps at once, as one kernel each)
    samples = waveopt.ops::WaveRNNLoop(gi1, gi2, f1, f2, u1, u2, u3, W_hh1, b_hh1, W_x2,
                                       W_hh2, b_hh2, W_fc1, W_fc2, W_fc3, b_fc3, noise)

The Loop is recognised by structure and algebra (``_analysis/recurrence.py``): two GRU cells
whose update is ``(1-z)·n + z·h``, dense layers and logits that are linear in the cell
outputs, and a sampler checked numerically against WaveRNN's RAW / MOL sampler. The op's
matrices are the linear forms' matrices (products folded in float64), so the result is
the same computation up to fp32 summation order. Outside WaveRNN loops,
``Relu?(Concat(x1, ..., xn) · W + b)`` with a constant W becomes ``FusedDense``.

The sampler — RAW or MOL by inverse CDF, MOL by Gumbel-max (fatchord's, coqui's) or RAW
argmax, the op's ``sampler`` attribute — may read its uniform(s) at any columns of a
per-step noise [T, B] or [T, B, k]; the op's noise is gathered from it outside the loop in
the op's column order, and the summary names the sampler found. Not applicable — the
model is left as it is, and the summary says why — when a Loop is not the recurrence
(another cell, another sampler, final states used outside) or there is nothing of either
pattern. A Loop that stays keeps its standard ops (no FusedDense inside it).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from waveopt.graph import infer_shapes
from waveopt.passes._analysis.linear_forms import LinearForm
from waveopt.passes._analysis.recurrence import NotRecognised, Recurrence, match_wavernn_loop
from waveopt.passes._analysis.sampler import SamplerMatch
from waveopt.passes._ir import DOMAIN, MODULE_KEY, Builder, constant_float64
from waveopt.passes.base import WaveoptPass

__all__ = ["LowerNativePass"]


class LowerNativePass(WaveoptPass):
    """Lower WaveRNN loops to ``WaveRNNLoop`` and concat-matmul(-relu) to ``FusedDense``."""

    name = "lower_native"
    description = "replace the WaveRNN Loop by the fused C++ op (needs the waveopt op library)"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        work = _with_shapes(model)
        mode_hint = work.metadata_props.get("waveopt.mode")
        lowered, reasons, samplers = 0, [], []
        for loop in [n for n in work.graph if n.op_type == "Loop" and n.domain in ("", "ai.onnx")]:
            try:
                recurrence = match_wavernn_loop(loop, mode_hint)
                _check_outputs_unused(recurrence)
            except NotRecognised as exc:
                reasons.append(str(exc))
                continue
            _replace_loop(work.graph, recurrence, Builder(work, "native"))
            lowered += 1
            if recurrence.sampler is not None:
                samplers.append(recurrence.sampler.describe())
        dense = _lower_dense(work.graph, Builder(work, "fused_dense"))
        if not lowered and not dense:
            return self.result(model, note="; ".join(reasons) or "no WaveRNN Loop or concat-matmul")
        ir.passes.common.RemoveUnusedNodesPass()(work)
        work.opset_imports[DOMAIN] = 1
        _move_graph(work, model)
        found = f" (sampler: {'; '.join(samplers)})" if samplers else ""
        done = [f"lowered {lowered} WaveRNN Loop(s) to {DOMAIN}::WaveRNNLoop{found}" if lowered else "",
                f"{dense} concat-matmul(-activation) to FusedDense" if dense else ""]
        return self.result(model, ", ".join(d for d in done if d), note="; ".join(reasons))


def _with_shapes(model: ir.Model) -> ir.Model:
    """A copy of the model with ONNX shape inference applied (Loop bodies included)."""
    proto = ir.serde.serialize_model(model)
    return ir.serde.deserialize_model(infer_shapes(proto) or proto)


def _move_graph(src: ir.Model, dst: ir.Model) -> None:
    dst.graph = src.graph


def _check_outputs_unused(rec: Recurrence) -> None:
    for i, out in enumerate(rec.loop.outputs):
        if i != rec.output_index and (out.uses() or out.is_graph_output()):
            raise NotRecognised("the Loop's final states are used after the loop")


# --- building the op ----------------------------------------------------------------------
def _replace_loop(graph: ir.Graph, rec: Recurrence, b: Builder) -> None:
    """Build the WaveRNNLoop op before the Loop and let it take over the Loop's output."""
    operands = _Operands(rec, b)
    inputs = [*operands.per_step_sources(), *operands.weights(), operands.driver()]
    sampler = {"sampler": rec.sampler.kind} if rec.sampler is not None and rec.sampler.kind != "inverse_cdf" else {}
    (out,) = b.add_before(rec.loop, "WaveRNNLoop", inputs, "loop", domain=DOMAIN,
                          mode=rec.mode, teacher_forced=int(rec.teacher_forced), **sampler)
    old = rec.loop.outputs[rec.output_index]
    out.type = ir.TensorType(ir.DataType.FLOAT)
    out.shape = old.shape
    name = old.name
    old.replace_all_uses_with(out, replace_graph_outputs=True)
    graph.remove(rec.loop, safe=False)
    out.name = name


class _Operands:
    """The op's inputs from the recurrence's linear forms; new nodes go before the Loop."""

    def __init__(self, rec: Recurrence, b: Builder) -> None:
        self.rec, self.b, self.at = rec, b, rec.loop
        self.key = {k[4:]: v for k, v in rec.forms.items() if k.startswith("key:")}
        trip = rec.loop.inputs[0]
        self.trip_1d = b.add_before(self.at, "Reshape", [trip, _ints(b, [1], "shape1")], "loop")[0] \
            if trip is not None else None

    def per_step_sources(self) -> list[ir.Value]:
        """gi1, gi2, f1, f2: everything that does not depend on the recurrent state, [T, B, n]."""
        f = self.rec.forms
        return [self.per_step([f["r1"], f["z1"], f["a1"]], "rnn1"),
                self.per_step([f["r2"], f["z2"], f["a2"]], "rnn2"),
                self.per_step([f["f1"]], "fc1"),
                self.per_step([f["f2"]], "fc2")]

    def weights(self) -> list[ir.Value]:
        """u1, u2, u3 (the sample's columns), then the recurrent and dense matrices and biases."""
        f, hidden, fc, term = self.rec.forms, self.rec.hidden, self.rec.fc, self.term
        b = self.b
        gates1, gates2 = [f["r1"], f["z1"], f["a1"]], [f["r2"], f["z2"], f["a2"]]
        hidden1, hidden2 = [f["r1"], f["z1"], f["b1"]], [f["r2"], f["z2"], f["b2"]]
        zeros = np.zeros(2 * hidden)
        return [
            _floats(b, np.concatenate([term(g, "s", 1) for g in gates1], axis=1)[0], "u1"),
            _floats(b, np.concatenate([term(g, "s", 1) for g in gates2], axis=1)[0], "u2"),
            _floats(b, term(f["f1"], "s", 1)[0], "u3"),
            _floats(b, np.concatenate([term(g, "h1", hidden) for g in hidden1], axis=1).T, "W_hh1"),
            _floats(b, np.concatenate([zeros, f["b1"].const]), "b_hh1"),
            _floats(b, np.concatenate([term(g, "h1o", hidden) for g in gates2], axis=1).T, "W_x2"),
            _floats(b, np.concatenate([term(g, "h2", hidden) for g in hidden2], axis=1).T, "W_hh2"),
            _floats(b, np.concatenate([zeros, f["b2"].const]), "b_hh2"),
            _floats(b, term(f["f1"], "h1o", hidden).T, "W_fc1"),
            _floats(b, term(f["f2"], "t1", fc).T, "W_fc2"),
            _floats(b, term(f["logits"], "t2", fc).T, "W_fc3"),
            _floats(b, f["logits"].const, "b_fc3"),
        ]

    def driver(self) -> ir.Value:
        """The op's last input: the noise (free-running) or the previous samples (teacher-forced)."""
        rec, b, at = self.rec, self.b, self.at
        if rec.driver is not None:
            value = _time_major(b, at, rec.driver[0], rec.driver[1], self.trip_1d)
            return value if rec.sampler is None else _op_noise(b, at, value, rec.sampler)
        # Argmax reads no noise: the op's noise is [T, B, 0]. Teacher-forced with the
        # previous sample already folded into the per-step tensors: u1..u3 are zero, so
        # the op's s may be anything; give it zeros [T, B].
        shape = b.add_before(at, "Shape", [self.time_rows()], "loop", start=0, end=2)[0]
        if rec.sampler is not None:
            shape = b.add_before(at, "Concat", [shape, _ints(b, [0], "no_columns")], "loop", axis=0)[0]
        return b.add_before(at, "ConstantOfShape", [shape], "loop", value=ir.tensor([0.0], dtype=ir.DataType.FLOAT))[0]

    def time_rows(self) -> ir.Value:
        """Any [T, B, ...] tensor of the loop: the driver, else the first per-step source."""
        rec = self.rec
        outer, axis = rec.driver if rec.driver is not None else next(iter(rec.step_tensors.values()))
        return _time_major(self.b, self.at, outer, axis, self.trip_1d)

    def per_step(self, forms: list[LinearForm], module: str) -> ir.Value:
        """Σ_P P·M_P + c over the step sources P of the column-stacked forms: [T, B, n], as one
        FusedDense(P_1, ..., P_m, [M_1; ...; M_m], c): no concat and no sum materialised."""
        b, at = self.b, self.at
        form = _hstack(forms)
        parts, blocks = [], []
        for skey, (outer, axis) in self.rec.step_tensors.items():
            m = form.terms.get(skey)
            if m is None or not np.any(m):
                continue
            parts.append(_time_major(b, at, outer, axis, self.trip_1d))
            blocks.append(m)
        if len(parts) == 1 and _is_identity(blocks[0]):
            # The source already is the projection (an optimized model hoisted it): no
            # FusedDense with an identity matrix, which would add n·n weights.
            return b.add_before(at, "Add", [parts[0], _floats(b, form.const, "bias")], module)[0] \
                if np.any(form.const) else parts[0]
        const = _floats(b, form.const, "bias")
        if parts:
            return b.add_before(at, "FusedDense", [*parts, _floats(b, np.concatenate(blocks, axis=0), "W"), const],
                                module, domain=DOMAIN, activation="none")[0]
        shape = b.add_before(at, "Shape", [self.time_rows()], module, start=0, end=2)[0]
        width = _ints(b, [form.width], "width")
        full = b.add_before(at, "Concat", [shape, width], module, axis=0)[0]
        return b.add_before(at, "Expand", [const, full], module)[0]

    def term(self, form: LinearForm, name: str, rows: int) -> np.ndarray:
        """The matrix ``form`` applies to the named step value (zeros when it does not read it)."""
        m = form.terms.get(self.key[name]) if self.key[name] is not None else None
        return np.zeros((rows, form.width)) if m is None else m


def _time_major(b: Builder, at: ir.Node, outer: ir.Value, axis: int, trip_1d) -> ir.Value:
    """The outer per-step tensor as [T, B, ...], cut to the Loop's trip count."""
    value = outer
    if axis == 1:
        perm = [1, 0] + list(range(2, len(outer.shape))) if outer.shape is not None else [1, 0, 2]
        value = b.add_before(at, "Transpose", [value], "loop", perm=perm)[0]
    if trip_1d is not None:
        value = b.add_before(at, "Slice", [value, _ints(b, [0], "start"), trip_1d, _ints(b, [0], "axis")],
                             "loop")[0]
    return value


def _floats(b: Builder, array, hint: str) -> ir.Value:
    return b.constant(np.asarray(array, dtype=np.float32), hint)


def _ints(b: Builder, values, hint: str) -> ir.Value:
    return b.constant(np.asarray(values, dtype=np.int64), hint)


def _is_identity(matrix: np.ndarray) -> bool:
    return matrix.shape[0] == matrix.shape[1] and np.array_equal(matrix, np.eye(matrix.shape[0]))


def _op_noise(b: Builder, at: ir.Node, noise: ir.Value, sampler: SamplerMatch) -> ir.Value:
    """The op's noise [T, B, C] (its uniforms, in its order) from the loop's noise [T, B] or
    [T, B, k]."""
    if sampler.columns == tuple(range(sampler.width)) or (sampler.width == 2 and sampler.columns == (0, 0)):
        return noise  # already in the op's order (RAW reads column 0 only)
    if sampler.width == 0:
        noise = b.add_before(at, "Unsqueeze", [noise, _ints(b, [2], "axis2")], "loop")[0]
    columns = _ints(b, sampler.columns, "noise_columns")
    return b.add_before(at, "Gather", [noise, columns], "loop", axis=2)[0]


def _hstack(forms: list[LinearForm]) -> LinearForm:
    keys = set().union(*(f.terms for f in forms))
    terms = {}
    for k in keys:
        rows = next(f.terms[k].shape[0] for f in forms if k in f.terms)
        terms[k] = np.concatenate([f.terms.get(k, np.zeros((rows, f.width))) for f in forms], axis=1)
    return LinearForm(sum(f.width for f in forms), terms, np.concatenate([f.const for f in forms]))


# --- FusedDense ---------------------------------------------------------------------------
_ACTIVATIONS = {"Relu": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid"}


def _lower_dense(graph: ir.Graph, b: Builder) -> int:
    """``act?(Concat(x1, ..., xn) · W + b)`` with constant W, b -> FusedDense, in the main
    graph only: a Loop left standing keeps its standard ops, for the loop passes to optimize
    as in the portable preset (a FusedDense there would hide its products from them)."""
    count = 0
    for node in list(graph):
        match = _match_dense(node)
        if match is None:
            continue
        parts, weight, bias, last, activation = match
        module = node.metadata_props.get(MODULE_KEY, "dense")
        (out,) = b.add_before(node, "FusedDense", [*parts, _floats(b, weight, "W"), _floats(b, bias, "b")], module,
                              domain=DOMAIN, activation=activation)
        old = last.outputs[0]
        out.type, out.shape = old.type, old.shape
        name = old.name
        old.replace_all_uses_with(out, replace_graph_outputs=True)
        out.name = name
        old.name = None
        count += 1
    return count


def _match_dense(node: ir.Node):
    """(inputs, W [K, N], b [N], last node, activation) for a concat-matmul(-act) pattern."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in ("Gemm", "MatMul"):
        return None
    concat = node.inputs[0].producer() if node.inputs[0] is not None else None
    if concat is None or concat.op_type != "Concat" or node.inputs[0].shape is None:
        return None
    rank = len(node.inputs[0].shape)
    if concat.attributes["axis"].value not in (-1, rank - 1) or (node.op_type == "Gemm" and rank != 2):
        return None
    weight = constant_float64(node.inputs[1])
    if weight is None or weight.ndim != 2:
        return None
    bias, last = np.zeros(weight.shape[1 if node.op_type == "MatMul" else 0]), node
    if node.op_type == "Gemm":
        attrs = {k: a.value for k, a in node.attributes.items()}
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            return None
        if attrs.get("transB", 0):
            weight = weight.T
        bias = np.zeros(weight.shape[1])
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            c = constant_float64(node.inputs[2])
            if c is None or c.size != weight.shape[1]:
                return None
            bias = c.reshape(-1)
    else:
        consumers = node.outputs[0].consumers()
        if len(consumers) == 1 and consumers[0].op_type == "Add" and not node.outputs[0].is_graph_output():
            add = consumers[0]
            other = add.inputs[1] if add.inputs[0] is node.outputs[0] else add.inputs[0]
            c = constant_float64(other)
            if c is not None and c.size == weight.shape[1]:
                bias, last = c.reshape(-1), add
    activation = "none"
    consumers = last.outputs[0].consumers()
    if len(consumers) == 1 and consumers[0].op_type in _ACTIVATIONS and not last.outputs[0].is_graph_output():
        activation, last = _ACTIVATIONS[consumers[0].op_type], consumers[0]
    if any(v is None or v.dtype not in (None, ir.DataType.FLOAT) for v in concat.inputs):
        return None
    return list(concat.inputs), weight, bias, last, activation
