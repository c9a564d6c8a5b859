"""The inputs of the native ``WaveRNNLoop`` op, derived from a PyTorch WaveRNN (the reference).

The op runs only the state-dependent part of each step; everything that does not depend on
the fed-back sample s_t or on the GRU states is hoisted out and computed here, for all steps
at once. With c_t = I's output without the sample column (``I.weight[:, 1:]·[m_t; a1_t] + I.bias``)
and w_s = ``I.weight[:, 0]`` (so I's output is c_t + s_t·w_s), fatchord's step
(``WaveRNN.step_logits``) splits as::

    rnn1 input  = c_t + s·w_s                      -> gi1 = W_ih1·c_t + b_ih1,    u1 = W_ih1·w_s
    rnn2 input  = [c_t + s·w_s + h1'; a2_t]        -> W_x2 = W_ih2[:, :H]
                                                      gi2 = W_x2·c_t + W_ih2[:, H:]·a2_t + b_ih2,  u2 = W_x2·w_s
    fc1 input   = [c_t + s·w_s + h1' + h2'; a3_t]  -> W_fc1 = fc1.W[:, :H]
                                                      f1 = W_fc1·c_t + fc1.W[:, H:]·a3_t + fc1.b,  u3 = W_fc1·w_s
    fc2 input   = [t1; a4_t]                       -> W_fc2 = fc2.W[:, :F],  f2 = fc2.W[:, F:]·a4_t + fc2.b
    fc3                                            -> W_fc3 = fc3.W, b_fc3 = fc3.b

and the op computes, per step, rnn1's hidden GEMV, W_x2·h1', rnn2's hidden GEMV, fc1 on
h1' + h2', fc2, fc3 and the sampler. The split is exact in real arithmetic; in float32 it
moves rounding by ~1e-7 relative (W·(c + s·w) vs W·c + s·(W·w)).
"""

from __future__ import annotations

import numpy as np
import torch
from onnx import TensorProto, helper, numpy_helper

from waveopt.models.wavernn import fold_with_overlap
from waveopt.ops import DOMAIN

__all__ = ["hoisted_inputs", "loop_weights", "loop_model", "NOISE_COLUMNS", "WEIGHT_NAMES", "STEP_INPUT_NAMES"]

STEP_INPUT_NAMES = ["gi1", "gi2", "f1", "f2"]
WEIGHT_NAMES = ["u1", "u2", "u3", "W_hh1", "b_hh1", "W_x2", "W_hh2", "b_hh2", "W_fc1", "W_fc2", "W_fc3", "b_fc3"]


def _np(t) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy().astype(np.float32))


def loop_weights(model) -> dict[str, np.ndarray]:
    """The op's constant inputs 4..15 (u1, u2, u3 and the recurrent weights) of a WaveRNN."""
    H, F = model.rnn_dims, model.hp.fc_dims
    with torch.no_grad():
        w_s = model.I.weight[:, 0]
        w_ih1 = model.rnn1.weight_ih_l0
        w_x2 = model.rnn2.weight_ih_l0[:, :H]
        w_fc1 = model.fc1.weight[:, :H]
        return {
            "u1": _np(w_ih1 @ w_s),
            "u2": _np(w_x2 @ w_s),
            "u3": _np(w_fc1 @ w_s),
            "W_hh1": _np(model.rnn1.weight_hh_l0),
            "b_hh1": _np(model.rnn1.bias_hh_l0),
            "W_x2": _np(w_x2),
            "W_hh2": _np(model.rnn2.weight_hh_l0),
            "b_hh2": _np(model.rnn2.bias_hh_l0),
            "W_fc1": _np(w_fc1),
            "W_fc2": _np(model.fc2.weight[:, :F]),
            "W_fc3": _np(model.fc3.weight),
            "b_fc3": _np(model.fc3.bias),
        }


def hoisted_inputs(model, mels, *, noise=None, prev_samples=None, fold: tuple[int, int] | None = None,
                   weights: bool = True) -> dict[str, np.ndarray]:
    """All inputs of ``WaveRNNLoop`` for ``model`` and ``mels`` [B, feat, frames], by name.

    Returns gi1, gi2 [T, B', 3H], f1, f2 [T, B', F] (B' = folds with ``fold``), the weights
    (unless ``weights=False``) and ``noise`` [T, B', 2] or ``prev_samples`` [T, B'] if given
    (numpy or torch; passed through as float32). T = frames·hop, as ``model.condition`` makes it.
    """
    H, F = model.rnn_dims, model.hp.fc_dims
    mels = torch.as_tensor(np.asarray(mels, dtype=np.float32))
    with torch.no_grad():
        m, aux = model.condition(mels)  # [B, T, feat], [B, T, 4·aux]
        if fold is not None:
            m, aux = fold_with_overlap(m, *fold), fold_with_overlap(aux, *fold)
        a1, a2, a3, a4 = model.split_aux(aux)
        c = torch.cat([m, a1], dim=-1) @ model.I.weight[:, 1:].T + model.I.bias
        w_x2 = model.rnn2.weight_ih_l0[:, :H]
        gi1 = c @ model.rnn1.weight_ih_l0.T + model.rnn1.bias_ih_l0
        gi2 = c @ w_x2.T + a2 @ model.rnn2.weight_ih_l0[:, H:].T + model.rnn2.bias_ih_l0
        f1 = c @ model.fc1.weight[:, :H].T + a3 @ model.fc1.weight[:, H:].T + model.fc1.bias
        f2 = a4 @ model.fc2.weight[:, F:].T + model.fc2.bias
    out = {name: _np(x.transpose(0, 1)) for name, x in zip(STEP_INPUT_NAMES, (gi1, gi2, f1, f2))}
    if weights:
        out.update(loop_weights(model))
    if noise is not None:
        out["noise"] = np.ascontiguousarray(np.asarray(noise, dtype=np.float32)[: out["gi1"].shape[0]])
    if prev_samples is not None:
        out["prev_samples"] = np.ascontiguousarray(np.asarray(prev_samples, dtype=np.float32))
    return out


NOISE_COLUMNS = {"inverse_cdf": 2, "gumbel_max": 11, "argmax": 0}  # the op's noise [T, B, C] per sampler


def loop_model(weights: dict[str, np.ndarray], mode: str, teacher_forced: bool = False,
               constant_weights: bool = True, sampler: str = "inverse_cdf"):
    """A one-node ONNX model running ``WaveRNNLoop`` with ``sampler`` (the op's attribute).

    Graph inputs: gi1, gi2, f1, f2 and noise [T, B, NOISE_COLUMNS[sampler]] (or prev_samples
    [T, B]) with dynamic T and B; the weights (``loop_weights``) are initializers, or graph
    inputs with ``constant_weights=False``. Output: samples [T, B] (or logits [T, B, N]).
    """
    three_h = weights["W_hh1"].shape[0]
    fc, classes = weights["W_fc1"].shape[0], weights["W_fc3"].shape[0]
    driver = "prev_samples" if teacher_forced else "noise"
    inputs = [
        helper.make_tensor_value_info("gi1", TensorProto.FLOAT, ["T", "B", three_h]),
        helper.make_tensor_value_info("gi2", TensorProto.FLOAT, ["T", "B", three_h]),
        helper.make_tensor_value_info("f1", TensorProto.FLOAT, ["T", "B", fc]),
        helper.make_tensor_value_info("f2", TensorProto.FLOAT, ["T", "B", fc]),
        helper.make_tensor_value_info(driver, TensorProto.FLOAT,
                                      ["T", "B"] + ([] if teacher_forced else [NOISE_COLUMNS[sampler]])),
    ]
    initializers = [numpy_helper.from_array(np.asarray(weights[n], dtype=np.float32), n) for n in WEIGHT_NAMES]
    if not constant_weights:
        inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(weights[n].shape)) for n in WEIGHT_NAMES]
        initializers = []
    output = "logits" if teacher_forced else "samples"
    node = helper.make_node("WaveRNNLoop", STEP_INPUT_NAMES + WEIGHT_NAMES + [driver], [output], domain=DOMAIN,
                            mode=mode, teacher_forced=int(teacher_forced),
                            **({} if sampler == "inverse_cdf" else {"sampler": sampler}))
    out_shape = ["T", "B", classes] if teacher_forced else ["T", "B"]
    graph = helper.make_graph([node], "wavernn_loop", inputs,
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, out_shape)],
                              initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(DOMAIN, 1)],
                             ir_version=9)
