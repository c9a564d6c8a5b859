"""Run a model lowered by ``lower_native`` without the C++ library: ORT computes everything
up to the fused op, numpy runs the op's documented semantics. An independent check of the
lowering (and a reference for the op)."""

from __future__ import annotations

import numpy as np
import onnx

from waveopt.graph import prune_graph
from waveopt.passes import argmax_sample, gumbel_sample, reference_sample
from waveopt.runtime import session

MOL_MIXTURES = 10


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def wavernn_loop(gi1, gi2, f1, f2, u1, u2, u3, w_hh1, b_hh1, w_x2, w_hh2, b_hh2, w_fc1, w_fc2, w_fc3,
                 b_fc3, driver, mode: str, teacher_forced: bool, peaks: dict | None = None,
                 sampler: str = "inverse_cdf"):
    """The WaveRNNLoop op in float64 numpy (the sampler in float32): samples [T, B] or logits [T, B, N].
    ``peaks``, if given, receives the largest relu(fc1) and relu(fc2) values ("fc1", "fc2")."""
    steps, batch, three_h = gi1.shape
    hidden = three_h // 3
    h1 = np.zeros((batch, hidden))
    h2 = np.zeros((batch, hidden))
    s = np.zeros((batch, 1))
    out = []

    def cell(gi, h, w_hh, b_hh):
        gh = h @ w_hh.T + b_hh
        r = _sigmoid(gi[:, :hidden] + gh[:, :hidden])
        z = _sigmoid(gi[:, hidden:2 * hidden] + gh[:, hidden:2 * hidden])
        n = np.tanh(gi[:, 2 * hidden:] + r * gh[:, 2 * hidden:])
        return (1 - z) * n + z * h

    for t in range(steps):
        if teacher_forced:
            s = driver[t][:, None].astype(np.float64)
        h1 = cell(gi1[t] + s * u1, h1, w_hh1, b_hh1)
        h2 = cell(gi2[t] + s * u2 + h1 @ w_x2.T, h2, w_hh2, b_hh2)
        t1 = np.maximum(f1[t] + s * u3 + (h1 + h2) @ w_fc1.T, 0)
        t2 = np.maximum(f2[t] + t1 @ w_fc2.T, 0)
        if peaks is not None:
            peaks["fc1"] = max(peaks.get("fc1", 0.0), float(t1.max()))
            peaks["fc2"] = max(peaks.get("fc2", 0.0), float(t2.max()))
        logits = t2 @ w_fc3.T + b_fc3
        if teacher_forced:
            out.append(logits)
            continue
        logits = logits.astype(np.float32)
        if sampler == "argmax":
            sample = argmax_sample(logits)
        elif sampler == "gumbel_max":
            sample = gumbel_sample(logits, driver[t])
        else:
            sample = reference_sample(logits, driver[t], mode)
        sample = sample.astype(np.float64)
        out.append(sample)
        s = sample[:, None]
    return np.stack(out).astype(np.float32)


def relu_peaks(model: onnx.ModelProto, mels: np.ndarray, seed: int = 0) -> list[float]:
    """[largest relu(fc1), largest relu(fc2)] of a lowered model's free run on ``mels`` with
    the noise of ``uniform_noise(..., seed)``: the op's own samples (ORT) are fed back in a
    float64 numpy teacher-forced run, so the path is the op's and the arithmetic numpy's."""
    from waveopt.demo_data import uniform_noise
    from waveopt.model_info import wavernn_info

    mels = mels if mels.ndim == 3 else mels[None]
    steps, sequences = wavernn_info(model).loop_shape(mels.shape[2], mels.shape[0])
    feed = {"mels": mels, "noise": uniform_noise(steps, sequences, seed)}
    samples = session(model).run(["samples"], feed)[0]
    prev = np.zeros_like(samples)
    prev[1:] = samples[:-1]
    _, args = _op_inputs(model, feed)
    peaks: dict = {}
    wavernn_loop(*[np.asarray(a, np.float64) for a in args[:16]], prev, mode="raw", teacher_forced=True,
                 peaks=peaks)
    return [peaks["fc1"], peaks["fc2"]]


def _op_inputs(model: onnx.ModelProto, feed: dict):
    """The WaveRNNLoop node and its input arrays (ORT computes what is not an initializer)."""
    nodes = [n for n in model.graph.node if n.op_type == "WaveRNNLoop"]
    assert len(nodes) == 1
    op = nodes[0]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.node[list(model.graph.node).index(op)]
    initializers = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    needed = [name for name in op.input if name not in initializers]
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in needed)
    # Nodes after the op cannot run here: keep only what the op's inputs need.
    values = dict(zip(needed, session(_prune(probe)).run(needed, feed)))
    return op, [values[n] if n in values else initializers[n] for n in op.input]


def run_lowered(model: onnx.ModelProto, feed: dict) -> dict:
    """Outputs of a lowered model: ORT up to the WaveRNNLoop node, numpy for the node itself."""
    op, args = _op_inputs(model, feed)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in op.attribute}
    text = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
    result = wavernn_loop(*[np.asarray(a, np.float64) if i < 16 else a for i, a in enumerate(args)],
                          mode=text["mode"], teacher_forced=bool(attrs["teacher_forced"]),
                          sampler=text.get("sampler", "inverse_cdf"))
    # The rest of the graph (post-processing) runs in ORT with the op's output as an input.
    rest = onnx.ModelProto()
    rest.CopyFrom(model)
    del rest.graph.node[list(model.graph.node).index(op)]
    rest.graph.input.append(onnx.helper.make_tensor_value_info(op.output[0], onnx.TensorProto.FLOAT, None))
    outputs = [o.name for o in rest.graph.output]
    if all(name == op.output[0] for name in outputs):
        return {op.output[0]: result}
    rest = _prune(rest)
    available = {**feed, op.output[0]: result}
    rest_feed = {i.name: available[i.name] for i in rest.graph.input if i.name in available}
    values = dict(zip(outputs, session(rest).run(outputs, rest_feed)))
    return values


def _prune(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop nodes no output needs and inputs nothing reads."""
    prune_graph(model.graph)
    return model
