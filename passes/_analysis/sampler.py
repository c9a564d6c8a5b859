"""Check numerically that a Loop body's sampler is WaveRNN's RAW or MOL sampler.

The nodes between (logits [B, N], noise row [B, 2]) and the fed-back sample are copied
into a small model and run in ONNX Runtime on random logits and uniforms, against the
reference samplers of ``waveopt.models.wavernn`` written in numpy. Any other sampler
(argmax, temperature, another mixture size) is reported as not recognised.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from waveopt.errors import WaveoptError
from waveopt.passes._analysis.errors import NotRecognised
from waveopt.runtime import run, session

__all__ = ["verify_sampler", "reference_sample"]

MOL_MIXTURES = 10
LOG_SCALE_MIN = np.log(1e-14)


def reference_sample(logits: np.ndarray, u: np.ndarray, mode: str) -> np.ndarray:
    """The fed-back value for logits [B, N] and uniforms u [B, 2] (float32 arithmetic)."""
    logits = logits.astype(np.float32)
    if mode == "raw":
        n = logits.shape[-1]
        cdf = np.cumsum(_softmax(logits), axis=-1, dtype=np.float32)
        index = np.minimum((cdf < u[:, :1]).sum(-1), n - 1).astype(np.float32)
        # float32 arithmetic in the reference's order: 2·class / (n - 1) - 1
        return np.float32(2.0) * index / np.float32(n - 1.0) - np.float32(1.0)
    k = MOL_MIXTURES
    cdf = np.cumsum(_softmax(logits[:, :k]), axis=-1, dtype=np.float32)
    idx = np.minimum((cdf < u[:, :1]).sum(-1), k - 1)
    rows = np.arange(len(idx))
    mean, log_scale = logits[rows, k + idx], np.maximum(logits[rows, 2 * k + idx], LOG_SCALE_MIN)
    x = mean + np.exp(log_scale) * (np.log(u[:, 1]) - np.log(1.0 - u[:, 1]))
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def verify_sampler(body: ir.Graph, logits: ir.Value, noise_row: ir.Value, sample: ir.Value,
                   mode_hint: str | None) -> str:
    """The sampler's mode ("raw" or "mol"), or NotRecognised."""
    nodes = _nodes_between(body, sample, {id(logits), id(noise_row)})
    if nodes is None:
        raise NotRecognised("the fed-back sample depends on more than the logits and the noise")
    n_classes = logits.shape[-1] if logits.shape is not None else None
    if not isinstance(n_classes, int):
        raise NotRecognised("the number of classes is unknown")
    rng = np.random.default_rng(0)
    batch = 64
    feed_logits = (rng.standard_normal((batch, n_classes)) * 3).astype(np.float32)
    feed_noise = rng.uniform(1e-5, 1 - 1e-5, (batch, 2)).astype(np.float32)
    try:
        session = _sampler_session(nodes, logits, noise_row, sample, n_classes)
        got = run(session, None, {"logits": feed_logits, "noise": feed_noise})[0].reshape(batch)
    except (WaveoptError, ValueError) as e:  # ORT refuses it, or it returns another shape
        raise NotRecognised(f"the sampler does not run as one: {e}") from None
    modes = [mode_hint] if mode_hint else (["mol"] if n_classes == 3 * MOL_MIXTURES else ["raw"])
    for mode in modes:
        expected = reference_sample(feed_logits, feed_noise, mode)
        # A few ulps of float noise can flip a class at a CDF boundary: allow 2 of 64.
        if np.mean(np.abs(got - expected) > 1e-4) <= 2 / batch:
            return mode
    raise NotRecognised(f"the sampler is not WaveRNN's {modes[0].upper()} sampler")


def _nodes_between(body: ir.Graph, output: ir.Value, inputs: set[int]) -> list[ir.Node] | None:
    """Nodes computing ``output`` from ``inputs`` and constants, in body order."""
    needed, stack = set(), [output]
    while stack:
        value = stack.pop()
        if id(value) in inputs or value.const_value is not None:
            continue
        node = value.producer()
        if node is None or node.graph is not body:
            return None
        if id(node) in needed:
            continue
        needed.add(id(node))
        stack.extend(v for v in node.inputs if v is not None)
    return [n for n in body if id(n) in needed]


def _sampler_session(nodes, logits, noise_row, sample, n_classes) -> ort.InferenceSession:
    """A standalone model of the sampler nodes (constants copied in as initializers)."""
    protos, initializers, seen = [], [], set()
    rename = {id(logits): "logits", id(noise_row): "noise"}

    def name(v):
        return rename.get(id(v), v.name)

    for node in nodes:
        proto = ir.serde.serialize_node(node)
        proto.ClearField("input")
        proto.input.extend(name(v) if v is not None else "" for v in node.inputs)
        protos.append(proto)
        for v in node.inputs:
            if v is not None and v.const_value is not None and v.name not in seen:
                seen.add(v.name)
                initializers.append(ir.serde.serialize_tensor(v.const_value))
                initializers[-1].name = v.name
    graph = onnx.helper.make_graph(
        protos, "sampler",
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["B", n_classes]),
         onnx.helper.make_tensor_value_info("noise", onnx.TensorProto.FLOAT, ["B", 2])],
        [onnx.helper.make_tensor_value_info(sample.name, onnx.TensorProto.FLOAT, None)],
        initializers,
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    model.ir_version = 8
    return session(model, threads=1)
