"""A WaveRNN sample loop whose body uses the ONNX ``GRU`` operator, built with onnx.helper.

Another exporter's idea of the same model: the GRU cells are ONNX ``GRU`` ops run one step
at a time (seq_len 1, ``linear_before_reset=1`` as PyTorch computes its GRU), the dense
layers are ``MatMul`` by a transposed weight + ``Add`` (or ``Gemm``), the aux vector is cut
with one ``Split``. Conditioning is precomputed, so the model's inputs are time-major::

    m [T, B, feat], aux [T, B, 4·aux] ─┐
    noise [T, B, 2] (or prev_samples [T, B]) ─ Loop(T) body:
        x_t = Gather(·, t) ...; h = Squeeze(GRU(Unsqueeze(x), W, R, B, Unsqueeze(h)).Y_h)
    ─> samples [T, B] (or logits [T, B, C])

Weights come from a :class:`waveopt.models.WaveRNN` (ONNX gate order z, r, h from
PyTorch's r, z, n), as initializers of the main graph that the body reads from the outer
scope; every node carries ``waveopt.module``. :func:`gru_op_loop_inputs` turns mels into
the model's inputs with the WaveRNN's own conditioning network, and
:func:`gru_op_loop_reference` is what the model must output (``generate_samples`` or
``teacher_forced_logits``, time-major).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from waveopt.models import HParams, WaveRNN, demo_model
from waveopt.models.wavernn import LOG_SCALE_MIN, MOL_MIXTURES
from waveopt.provenance import MODULE_KEY

__all__ = ["gru_op_loop_model", "gru_op_loop_inputs", "gru_op_loop_reference", "gru_op_wavernn"]

OPSET = 18
SMALL_SIZES = dict(rnn_dims=32, fc_dims=24, res_out_dims=16, compute_dims=16, res_blocks=1,
                   upsample_factors=(4, 4), pad=1)


def gru_op_wavernn(model=None, mode: str | None = None, seed: int = 0) -> WaveRNN:
    """The WaveRNN a GRU-op loop is built from: ``model`` itself if it is one, else the
    seeded demo model of ``model``'s HParams / dict of sizes (small sizes if None)."""
    if isinstance(model, WaveRNN):
        if mode is not None and mode != model.hp.mode:
            raise ValueError(f"mode {mode!r} does not match the model's {model.hp.mode!r}")
        return model.eval()
    if isinstance(model, HParams):
        hp = model if mode is None else dataclasses.replace(model, mode=mode)
    else:
        hp = HParams(mode=mode or "raw", **(SMALL_SIZES if model is None else dict(model)))
    return demo_model(hp, seed=seed)


def gru_op_loop_model(model=None, mode: str | None = None, teacher_forced: bool = False,
                      seed: int = 0, *, dense: str = "matmul") -> onnx.ModelProto:
    """The sample loop of :func:`gru_op_wavernn` ``(model, mode, seed)`` with ONNX GRU ops.

    ``dense``: "matmul" (MatMul by W^T + Add b) or "gemm" (Gemm with transB=1).
    Inputs m, aux and noise [T, B, 2] (teacher-forced: prev_samples [T, B]); output
    samples [T, B] (teacher-forced: logits [T, B, C]).
    """
    if dense not in ("matmul", "gemm"):
        raise ValueError(f"dense must be 'matmul' or 'gemm', not {dense!r}")
    wavernn = gru_op_wavernn(model, mode, seed)
    return _Builder(wavernn, teacher_forced, dense).build()


@torch.no_grad()
def gru_op_loop_inputs(model: WaveRNN, mels: np.ndarray, noise: np.ndarray | None = None,
                       prev_samples: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The GRU-op model's inputs for mels [B, feat, frames]: m and aux from the model's own
    conditioning network (time-major), plus noise [T, B, 2] or prev_samples [T, B]."""
    if (noise is None) == (prev_samples is None):
        raise ValueError("give exactly one of noise and prev_samples")
    m, aux = model.condition(torch.from_numpy(np.asarray(mels, np.float32)))
    inputs = {"m": m.transpose(0, 1).contiguous().numpy(), "aux": aux.transpose(0, 1).contiguous().numpy()}
    if noise is not None:
        inputs["noise"] = np.asarray(noise, np.float32)
    else:
        inputs["prev_samples"] = np.asarray(prev_samples, np.float32)
    return inputs


@torch.no_grad()
def gru_op_loop_reference(model: WaveRNN, mels: np.ndarray, noise: np.ndarray | None = None,
                          prev_samples: np.ndarray | None = None) -> np.ndarray:
    """What the GRU-op model outputs, from PyTorch: samples [T, B] or logits [T, B, C]."""
    mels_t = torch.from_numpy(np.asarray(mels, np.float32))
    if noise is not None:
        return model.generate_samples(mels_t, torch.from_numpy(np.asarray(noise, np.float32))).numpy()
    prev = torch.from_numpy(np.asarray(prev_samples, np.float32))
    return model.teacher_forced_logits(mels_t, prev).numpy()


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float32).numpy().copy()


def _onnx_gate_order(w: np.ndarray, hidden: int) -> np.ndarray:
    """PyTorch's gate blocks (r, z, n) along axis 0 -> ONNX's (z, r, h)."""
    r, z, n = (w[i * hidden:(i + 1) * hidden] for i in range(3))
    return np.concatenate([z, r, n], axis=0)


class _Builder:
    def __init__(self, model: WaveRNN, teacher_forced: bool, dense: str):
        self.model = model
        self.hp = model.hp
        self.teacher_forced = teacher_forced
        self.dense = dense
        self.inits: list[onnx.TensorProto] = []
        self.body: list[onnx.NodeProto] = []

    # --- helpers ------------------------------------------------------------------------
    def init(self, name: str, array) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, module: str, op: str, inputs, outputs, **attrs) -> list[str]:
        outputs = [outputs] if isinstance(outputs, str) else list(outputs)
        node = helper.make_node(op, list(inputs), outputs, name=f"{module}/{outputs[0] or op}", **attrs)
        helper.set_metadata_props(node, {MODULE_KEY: module})
        self.body.append(node)
        return outputs

    def linear(self, module: str, x: str, layer: torch.nn.Linear, out: str) -> str:
        w, b = _np(layer.weight), _np(layer.bias)
        if self.dense == "gemm":
            self.node(module, "Gemm", [x, self.init(f"{module}.weight", w), self.init(f"{module}.bias", b)],
                      out, transB=1)
            return out
        self.node(module, "MatMul", [x, self.init(f"{module}.weight_t", w.T.copy())], f"{out}_mm")
        self.node(module, "Add", [f"{out}_mm", self.init(f"{module}.bias", b)], out)
        return out

    def gru(self, module: str, x: str, h: str, gru: torch.nn.GRU) -> str:
        """h' [B, H] = one ONNX GRU step of x [B, I] from h [B, H]."""
        hidden = gru.hidden_size
        w = _onnx_gate_order(_np(gru.weight_ih_l0), hidden)[None]
        r = _onnx_gate_order(_np(gru.weight_hh_l0), hidden)[None]
        bias = np.concatenate([_onnx_gate_order(_np(gru.bias_ih_l0), hidden),
                               _onnx_gate_order(_np(gru.bias_hh_l0), hidden)])[None]
        self.node(module, "Unsqueeze", [x, "axis0"], f"{module}/x_seq")
        self.node(module, "Unsqueeze", [h, "axis0"], f"{module}/h_seq")
        self.node(module, "GRU", [f"{module}/x_seq", self.init(f"{module}.W", w), self.init(f"{module}.R", r),
                                  self.init(f"{module}.B", bias), "", f"{module}/h_seq"],
                  ["", f"{module}/Y_h"], hidden_size=hidden, linear_before_reset=1)
        self.node(module, "Squeeze", [f"{module}/Y_h", "axis0"], f"{module}/h_new")
        return f"{module}/h_new"

    # --- the model ----------------------------------------------------------------------
    def build(self) -> onnx.ModelProto:
        hp, model = self.hp, self.model
        rnn, n_classes = hp.rnn_dims, model.n_classes
        self.init("axis0", np.array([0], np.int64))
        self.init("axis1", np.array([1], np.int64))

        self.node("loop", "Gather", ["m", "t"], "m_t", axis=0)
        self.node("loop", "Gather", ["aux", "t"], "aux_t", axis=0)
        if self.teacher_forced:
            self.node("loop", "Gather", ["prev_samples", "t"], "prev_t", axis=0)
            self.node("loop", "Unsqueeze", ["prev_t", "axis1"], "x")
        else:
            self.node("loop", "Gather", ["noise", "t"], "u_t", axis=0)
        self.node("step", "Split", ["aux_t"], ["a1", "a2", "a3", "a4"], axis=1, num_outputs=4)
        self.node("step", "Concat", ["x", "m_t", "a1"], "I_in", axis=1)
        x = self.linear("I", "I_in", model.I, "I_out")
        h1 = self.gru("rnn1", x, "h1", model.rnn1)
        self.node("step", "Add", [x, h1], "res1")
        self.node("step", "Concat", ["res1", "a2"], "rnn2_in", axis=1)
        h2 = self.gru("rnn2", "rnn2_in", "h2", model.rnn2)
        self.node("step", "Add", ["res1", h2], "res2")
        self.node("step", "Concat", ["res2", "a3"], "fc1_in", axis=1)
        self.linear("fc1", "fc1_in", model.fc1, "fc1_lin")
        self.node("fc1", "Relu", ["fc1_lin"], "fc1_out")
        self.node("step", "Concat", ["fc1_out", "a4"], "fc2_in", axis=1)
        self.linear("fc2", "fc2_in", model.fc2, "fc2_lin")
        self.node("fc2", "Relu", ["fc2_lin"], "fc2_out")
        logits = self.linear("fc3", "fc2_out", model.fc3, "logits_t")
        self.node("loop", "Identity", ["cond_in"], "cond_out")

        batch = ["B"]
        state_in = [helper.make_tensor_value_info("h1", TensorProto.FLOAT, batch + [rnn]),
                    helper.make_tensor_value_info("h2", TensorProto.FLOAT, batch + [rnn])]
        state_out = [helper.make_tensor_value_info(h1, TensorProto.FLOAT, batch + [rnn]),
                     helper.make_tensor_value_info(h2, TensorProto.FLOAT, batch + [rnn])]
        if self.teacher_forced:
            scan = helper.make_tensor_value_info(logits, TensorProto.FLOAT, batch + [n_classes])
            carried_in, carried_out = state_in, state_out
        else:
            sample = self._sample_raw(logits, n_classes) if hp.mode == "raw" else self._sample_mol(logits)
            self.node("sampling", "Unsqueeze", [sample, "axis1"], "x_next")
            scan = helper.make_tensor_value_info(sample, TensorProto.FLOAT, batch)
            carried_in = [helper.make_tensor_value_info("x", TensorProto.FLOAT, batch + [1]), *state_in]
            carried_out = [helper.make_tensor_value_info("x_next", TensorProto.FLOAT, batch + [1]), *state_out]
        body = helper.make_graph(
            self.body, "gru_op_step",
            [helper.make_tensor_value_info("t", TensorProto.INT64, []),
             helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []), *carried_in],
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), *carried_out, scan],
        )
        return self._main(body, len(carried_in), rnn, n_classes)

    def _sample_raw(self, logits: str, n_classes: int) -> str:
        """sample_raw: 2·#{k: cdf_k < u0} / (C-1) - 1, the class clamped to C-1."""
        f32 = np.float32
        self.node("sampling", "Softmax", [logits], "probs", axis=-1)
        self.node("sampling", "CumSum", ["probs", self.init("c_axis1", np.array(1, np.int64))], "cdf")
        self.node("sampling", "Gather", ["u_t", self.init("c_idx0", np.array([0], np.int64))], "u0", axis=1)
        self.node("sampling", "Less", ["cdf", "u0"], "below")
        self.node("sampling", "Cast", ["below"], "below_f", to=TensorProto.FLOAT)
        self.node("sampling", "ReduceSum", ["below_f", "axis1"], "index_f", keepdims=0)
        self.node("sampling", "Min", ["index_f", self.init("c_last", f32(n_classes - 1))], "index")
        self.node("sampling", "Mul", ["index", self.init("c_two", f32(2.0))], "twice")
        self.node("sampling", "Div", ["twice", self.init("c_cm1", f32(n_classes - 1.0))], "scaled")
        self.node("sampling", "Sub", ["scaled", self.init("c_one", f32(1.0))], "sample")
        return "sample"

    def _sample_mol(self, logits: str) -> str:
        """sample_mol: component by inverse CDF at u0, logistic at u1, clamped to [-1, 1]."""
        n, f32, i64 = MOL_MIXTURES, np.float32, np.int64
        starts = [self.init(f"c_start{k}", np.array([k * n], i64)) for k in range(4)]
        for k, name in enumerate(["logit_probs", "means", "log_scales"]):
            self.node("sampling", "Slice", [logits, starts[k], starts[k + 1], "axis1"], name)
        self.node("sampling", "Softmax", ["logit_probs"], "probs", axis=-1)
        self.node("sampling", "CumSum", ["probs", self.init("c_axis1", np.array(1, i64))], "cdf")
        self.node("sampling", "Split", ["u_t"], ["u0", "u1"], axis=1, num_outputs=2)
        self.node("sampling", "Less", ["cdf", "u0"], "below")
        self.node("sampling", "Cast", ["below"], "below_f", to=TensorProto.FLOAT)
        self.node("sampling", "ReduceSum", ["below_f", "axis1"], "k_f", keepdims=1)
        self.node("sampling", "Min", ["k_f", self.init("c_last", f32(n - 1))], "k_clamped")
        self.node("sampling", "Cast", ["k_clamped"], "k", to=TensorProto.INT64)
        self.node("sampling", "GatherElements", ["means", "k"], "mean", axis=1)
        self.node("sampling", "GatherElements", ["log_scales", "k"], "log_scale_k", axis=1)
        self.node("sampling", "Max", ["log_scale_k", self.init("c_ls_min", f32(LOG_SCALE_MIN))], "log_scale")
        self.node("sampling", "Exp", ["log_scale"], "scale")
        self.node("sampling", "Log", ["u1"], "log_u1")
        self.node("sampling", "Sub", [self.init("c_one", f32(1.0)), "u1"], "one_minus_u1")
        self.node("sampling", "Log", ["one_minus_u1"], "log_1mu1")
        self.node("sampling", "Sub", ["log_u1", "log_1mu1"], "logit_u")
        self.node("sampling", "Mul", ["scale", "logit_u"], "offset")
        self.node("sampling", "Add", ["mean", "offset"], "value")
        self.node("sampling", "Clip", ["value", self.init("c_m1", f32(-1.0)), self.init("c_p1", f32(1.0))],
                  "value_clamped")
        self.node("sampling", "Squeeze", ["value_clamped", "axis1"], "sample")
        return "sample"

    def _main(self, body: onnx.GraphProto, n_carried: int, rnn: int, n_classes: int) -> onnx.ModelProto:
        hp = self.hp
        zeros = numpy_helper.from_array(np.zeros(1, np.float32))
        main = [
            helper.make_node("Shape", ["m"], ["T1"], start=0, end=1),
            helper.make_node("Squeeze", ["T1"], ["trip_count"]),
            helper.make_node("Shape", ["m"], ["B1"], start=1, end=2),
            helper.make_node("Concat", ["B1", "c_rnn_dims"], ["h_shape"], axis=0),
            helper.make_node("ConstantOfShape", ["h_shape"], ["h0"], value=zeros),
        ]
        self.init("c_rnn_dims", np.array([rnn], np.int64))
        initial = ["h0", "h0"]
        if not self.teacher_forced:
            main += [helper.make_node("Concat", ["B1", "axis1"], ["x_shape"], axis=0),
                     helper.make_node("ConstantOfShape", ["x_shape"], ["x0"], value=zeros)]
            initial = ["x0", *initial]
        finals = [f"final_{i}" for i in range(n_carried)]
        out = "logits" if self.teacher_forced else "samples"
        main.append(helper.make_node("Loop", ["trip_count", "", *initial], [*finals, out], body=body))
        for node in main:
            helper.set_metadata_props(node, {MODULE_KEY: "loop"})
        inputs = [helper.make_tensor_value_info("m", TensorProto.FLOAT, ["T", "B", hp.feat_dims]),
                  helper.make_tensor_value_info("aux", TensorProto.FLOAT, ["T", "B", 4 * self.model.aux_dims])]
        if self.teacher_forced:
            inputs.append(helper.make_tensor_value_info("prev_samples", TensorProto.FLOAT, ["T", "B"]))
            outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["T", "B", n_classes])]
        else:
            inputs.append(helper.make_tensor_value_info("noise", TensorProto.FLOAT, ["T", "B", 2]))
            outputs = [helper.make_tensor_value_info("samples", TensorProto.FLOAT, ["T", "B"])]
        graph = helper.make_graph(main, "wavernn_gru_op", inputs, outputs, initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=10)
        model.producer_name = "waveopt-tests"
        meta = {"waveopt.mode": hp.mode}
        if not self.teacher_forced:
            meta.update({"waveopt.sampled_outputs": "samples", "waveopt.noise_input": "noise"})
        helper.set_model_props(model, meta)
        onnx.checker.check_model(model, full_check=True)
        return model
