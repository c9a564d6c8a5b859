"""Check numerically which sampler a Loop body's sampler is, and where it reads its uniforms.

The nodes between (logits [B, N], this step's noise row [B, k] or [B]) and the fed-back
sample are copied into a small model and run in ONNX Runtime on random logits and
uniforms, against reference samplers written in numpy (float32 arithmetic):

- RAW inverse CDF (the fused op's RAW): class by inverse CDF of softmax(logits) at
  ``u[:, i]``, for any column i of the row (the row itself for [B]);
- MOL inverse CDF (the fused op's MOL): component by inverse CDF of softmax(logits[:10])
  at ``u[:, i]``, then the logistic at ``u[:, j]``, for any columns i != j;
- MOL Gumbel-max (fatchord's, coqui's): component ``argmax(logit_k - log(-log(u_k)))`` over
  10 adjacent columns, then the logistic at any other column;
- RAW argmax (greedy), which reads no noise.

Each is one of the fused op's ``sampler`` attributes. Anything else is not recognised.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from waveopt.errors import WaveoptError
from waveopt.passes._analysis.errors import NotRecognised
from waveopt.runtime import run, session

__all__ = ["SamplerMatch", "argmax_sample", "gumbel_sample", "reference_sample", "verify_noiseless_sampler",
           "verify_sampler"]

MOL_MIXTURES = 10
LOG_SCALE_MIN = np.log(1e-14)
_BATCH = 64


@dataclasses.dataclass(frozen=True)
class SamplerMatch:
    """A sampler the fused op has: its mode, its ``sampler`` attribute and the noise-row
    columns of its uniforms (the op's noise row holds these columns, in this order)."""

    mode: str  # "raw" or "mol"
    kind: str  # the op's sampler: "inverse_cdf", "gumbel_max" or "argmax"
    columns: tuple[int, ...]  # inverse CDF: RAW (i, i), MOL (component, logistic);
    #                           Gumbel-max: the 10 component columns, then the logistic; argmax: ()
    width: int  # the noise row's size k; 0 for a [B] row or no noise

    def describe(self) -> str:
        where = "noise[t, b]" if self.width == 0 else f"noise[t, b, {self.columns[0]}]" if self.columns else ""
        shape = "[T, B]" if self.width == 0 else f"[T, B, {self.width}]"
        if self.kind == "argmax":
            return "RAW argmax (greedy, no noise)"
        if self.kind == "gumbel_max":
            return (f"MOL Gumbel-max (components at noise[t, b, {self.columns[0]}:{self.columns[0] + MOL_MIXTURES}], "
                    f"logistic at column {self.columns[-1]}) of {shape}")
        if self.mode == "raw":
            return f"RAW inverse CDF at {where} of {shape}"
        return f"MOL inverse CDF (component at {where}, logistic at column {self.columns[1]}) of {shape}"


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
    return _logistic(logits, idx, u[:, 1])


def gumbel_sample(logits: np.ndarray, u: np.ndarray) -> np.ndarray:
    """fatchord's / coqui's MOL for logits [B, 30] and uniforms u [B, 11]:
    argmax(logit_k - log(-log(u_k))) over k < 10, the logistic at u[:, 10] (float32)."""
    k = MOL_MIXTURES
    logits, u = logits.astype(np.float32), u.astype(np.float32)
    idx = np.argmax(logits[:, :k] - np.log(-np.log(u[:, :k])), axis=-1)
    return _logistic(logits, idx, u[:, k])


def argmax_sample(logits: np.ndarray) -> np.ndarray:
    """RAW greedy: 2·argmax / (N - 1) - 1 for logits [B, N] (float32)."""
    n = logits.shape[-1]
    return np.float32(2.0) * np.argmax(logits, -1).astype(np.float32) / np.float32(n - 1.0) - np.float32(1.0)


def _logistic(logits, idx, u1):
    k, rows = MOL_MIXTURES, np.arange(len(idx))
    mean, log_scale = logits[rows, k + idx], np.maximum(logits[rows, 2 * k + idx], LOG_SCALE_MIN)
    x = mean + np.exp(log_scale) * (np.log(u1) - np.log(1.0 - u1))
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def _agrees(got: np.ndarray, expected: np.ndarray) -> bool:
    # A few ulps of float noise can flip a class at a CDF boundary: allow 2 of 64.
    return bool(np.mean(np.abs(got - expected) > 1e-4) <= 2 / len(got))


def verify_sampler(body: ir.Graph, logits: ir.Value, noise_row: ir.Value, sample: ir.Value,
                   mode_hint: str | None) -> SamplerMatch:
    """The sampler as the fused op can run it, or NotRecognised (naming a known sampler
    the op does not have)."""
    nodes = _nodes_between(body, sample, {id(logits), id(noise_row)})
    if nodes is None:
        raise NotRecognised("the fed-back sample depends on more than the logits and the noise")
    n_classes = _classes(logits)
    shape = noise_row.shape
    if shape is None or len(shape) not in (1, 2) or (len(shape) == 2 and not isinstance(shape[-1], int)):
        raise NotRecognised("the noise row's size is unknown")
    width = 0 if len(shape) == 1 else shape[-1]
    rng = np.random.default_rng(0)
    feed_logits = (rng.standard_normal((_BATCH, n_classes)) * 3).astype(np.float32)
    feed_noise = rng.uniform(1e-5, 1 - 1e-5, (_BATCH, width) if width else (_BATCH,)).astype(np.float32)
    try:
        session = _sampler_session(nodes, logits, noise_row, sample, n_classes, width)
        got = run(session, None, {"logits": feed_logits, "noise": feed_noise})[0].reshape(_BATCH)
    except (WaveoptError, ValueError) as e:  # ORT refuses it, or it returns another shape
        raise NotRecognised(f"the sampler does not run as one: {e}") from None
    columns = feed_noise.reshape(_BATCH, -1)
    modes = [mode_hint] if mode_hint else (["mol"] if n_classes == 3 * MOL_MIXTURES else ["raw"])
    for mode in modes:
        if mode == "raw":
            pairs = [(i, i) for i in range(columns.shape[1])]
        else:
            pairs = list(itertools.permutations(range(columns.shape[1]), 2))
        for pair in pairs:
            if _agrees(got, reference_sample(feed_logits, columns[:, list(pair)], mode)):
                return SamplerMatch(mode, "inverse_cdf", pair, width)
    if "mol" in modes:
        for gumbel in _gumbel_columns(columns.shape[1]):
            if _agrees(got, gumbel_sample(feed_logits, columns[:, list(gumbel)])):
                return SamplerMatch("mol", "gumbel_max", gumbel, width)
    raise NotRecognised(f"the sampler is not one of WaveRNN's {modes[0].upper()} samplers "
                        "(inverse CDF, Gumbel-max, argmax)")


def _gumbel_columns(width: int):
    """Candidate (10 adjacent component columns..., logistic column) of a noise row."""
    k = MOL_MIXTURES
    for start in range(width - k + 1):
        components = tuple(range(start, start + k))
        for logistic in range(width):
            if logistic not in components:
                yield components + (logistic,)


def verify_noiseless_sampler(body: ir.Graph, logits: ir.Value, sample: ir.Value) -> SamplerMatch:
    """RAW argmax (greedy) when the sampler that reads no noise is one, else NotRecognised."""
    nodes = _nodes_between(body, sample, {id(logits)})
    if nodes is None:
        raise NotRecognised("the fed-back sample depends on more than the logits and no per-step noise feeds it")
    n_classes = _classes(logits)
    feed = (np.random.default_rng(0).standard_normal((_BATCH, n_classes)) * 3).astype(np.float32)
    try:
        session = _sampler_session(nodes, logits, None, sample, n_classes, 0)
        got = run(session, None, {"logits": feed})[0].reshape(_BATCH)
    except (WaveoptError, ValueError) as e:
        raise NotRecognised(f"the sampler does not run as one: {e}") from None
    if not _agrees(got, argmax_sample(feed)):
        raise NotRecognised("the sampler reads no per-step noise and is not RAW argmax")
    return SamplerMatch("raw", "argmax", (), 0)


def _classes(logits: ir.Value) -> int:
    n_classes = logits.shape[-1] if logits.shape is not None else None
    if not isinstance(n_classes, int):
        raise NotRecognised("the number of classes is unknown")
    return n_classes


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


def _sampler_session(nodes, logits, noise_row, sample, n_classes, width) -> ort.InferenceSession:
    """A standalone model of the sampler nodes (constants copied in as initializers)."""
    protos, initializers, seen = [], [], set()
    rename = {id(logits): "logits"}
    if noise_row is not None:
        rename[id(noise_row)] = "noise"

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
    inputs = [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["B", n_classes])]
    if noise_row is not None:
        inputs.append(onnx.helper.make_tensor_value_info("noise", onnx.TensorProto.FLOAT,
                                                         ["B", width] if width else ["B"]))
    graph = onnx.helper.make_graph(
        protos, "sampler", inputs,
        [onnx.helper.make_tensor_value_info(sample.name, onnx.TensorProto.FLOAT, None)],
        initializers,
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    model.ir_version = 8
    return session(model, threads=1)
