"""The samplers ``waveopt.loop.from_step`` appends to a step's logits, as ONNX nodes.

Each takes logits [B, C] and this step's row of the noise input, u [B, k] ([B] when the
noise is [T, B]), and returns the value fed back, [B] in [-1, 1]:

| name | noise row | what it draws |
|---|---|---|
| ``raw-icdf`` | ``u[:, index]`` | class c by inverse CDF of softmax(logits); ``2·c / (C - 1) - 1`` |
| ``mol-icdf`` | ``u[:, 0]``, ``u[:, 1]`` | component by inverse CDF of softmax(logits[:K]), then the logistic at ``u[:, 1]`` (waveopt's MOL) |
| ``mol-gumbel`` | ``u[:, :K]``, ``u[:, K]`` | component ``argmax(logit_k - log(-log(u_k)))`` (fatchord's, coqui's), then the logistic at ``u[:, K]`` |
| ``raw-argmax`` | none | the most likely class (greedy): ``2·argmax / (C - 1) - 1`` |

MOL logits are [B, 3K] (mixture logits, means, log-scales); log-scales are clamped below
at log(1e-14) and the sample to [-1, 1], as in fatchord's and coqui's code. ``raw-icdf``
and ``mol-icdf`` are the samplers of ``waveopt.models.WaveRNN`` and of the fused op.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from waveopt.provenance import MODULE_KEY

__all__ = ["SAMPLERS", "MOL_MIXTURES", "LOG_SCALE_MIN", "sampler_mode", "needed_noise_width", "add_sampler"]

MOL_MIXTURES = 10
LOG_SCALE_MIN = math.log(1e-14)
SAMPLERS = ("raw-icdf", "mol-icdf", "mol-gumbel", "raw-argmax")


def sampler_mode(name: str) -> str:
    """"raw" or "mol"."""
    return name.split("-")[0]


def needed_noise_width(name: str, width: int | None) -> int | None:
    """The trailing size of the noise input a sampler needs (0: [T, B]; None: no noise)."""
    if name == "raw-argmax":
        return None
    if name == "mol-gumbel":
        return MOL_MIXTURES + 1 if width is None else width
    return 2 if width is None else width


class _Nodes:
    def __init__(self, graph: ir.Graph, prefix: str):
        self.graph, self.prefix, self.count = graph, prefix, 0

    def __call__(self, op, inputs, **attrs) -> ir.Value:
        self.count += 1
        name = f"{self.prefix}/{op}_{self.count}"
        node = ir.Node("", op, inputs, attributes=[ir.convenience.convert_attribute(k, v) for k, v in attrs.items()],
                       name=name, metadata_props={MODULE_KEY: "sampling"})
        node.outputs[0].name = name
        self.graph.append(node)
        return node.outputs[0]

    def const(self, array, dtype) -> ir.Value:
        self.count += 1
        name = f"{self.prefix}/c_{self.count}"
        value = ir.Value(name=name, const_value=ir.tensor(np.asarray(array, dtype=dtype), name=name))
        value.shape = ir.Shape(list(np.shape(array)))
        value.type = ir.TensorType(ir.DataType.FLOAT if dtype == np.float32 else ir.DataType.INT64)
        self.graph.register_initializer(value)
        return value


def add_sampler(graph: ir.Graph, name: str, logits: ir.Value, u: ir.Value | None, classes: int,
                index: int = 0) -> ir.Value:
    """Append sampler ``name`` to ``graph``; returns the sample [B] (float32)."""
    op = _Nodes(graph, "sampler")
    i64, f32 = np.int64, np.float32

    def column(j):  # u[:, j] as [B, 1]
        if u.shape is not None and len(u.shape) == 1:
            return op("Unsqueeze", [u, op.const([1], i64)])
        return op("Gather", [u, op.const([j], i64)], axis=1)

    def cols(value, start, stop):
        return op("Slice", [value, op.const([start], i64), op.const([stop], i64), op.const([1], i64)])

    def icdf(probs_logits, width, uniform):  # class index [B] (int64)
        cdf = op("CumSum", [op("Softmax", [probs_logits], axis=1), op.const(1, i64)])
        count = op("ReduceSum", [op("Cast", [op("Less", [cdf, uniform])], to=ir.DataType.INT64),
                                 op.const([1], i64)], keepdims=0)
        return op("Min", [count, op.const(width - 1, i64)])

    def scaled(index, width):  # 2·c / (C - 1) - 1 in float32, in that order
        c = op("Cast", [index], to=ir.DataType.FLOAT)
        return op("Sub", [op("Div", [op("Mul", [op.const(2.0, f32), c]), op.const(width - 1.0, f32)]),
                          op.const(1.0, f32)])

    if name == "raw-icdf":
        return scaled(icdf(logits, classes, column(index)), classes)
    if name == "raw-argmax":
        return scaled(op("ArgMax", [logits], axis=1, keepdims=0), classes)
    k = MOL_MIXTURES
    if name == "mol-icdf":
        component = op("Unsqueeze", [icdf(cols(logits, 0, k), k, column(0)), op.const([1], i64)])
        uniform = column(1)
    elif name == "mol-gumbel":
        gumbel = op("Log", [op("Neg", [op("Log", [cols(u, 0, k)])])])
        component = op("ArgMax", [op("Sub", [cols(logits, 0, k), gumbel])], axis=1, keepdims=1)
        uniform = column(k)
    else:
        raise ValueError(f"unknown sampler {name!r} (known: {', '.join(SAMPLERS)})")
    mean = op("GatherElements", [cols(logits, k, 2 * k), component], axis=1)
    log_scale = op("Max", [op("GatherElements", [cols(logits, 2 * k, 3 * k), component], axis=1),
                           op.const(LOG_SCALE_MIN, f32)])
    logistic = op("Sub", [op("Log", [uniform]), op("Log", [op("Sub", [op.const(1.0, f32), uniform])])])
    x = op("Add", [mean, op("Mul", [op("Exp", [log_scale]), logistic])])
    x = op("Min", [op("Max", [x, op.const(-1.0, f32)]), op.const(1.0, f32)])
    return op("Squeeze", [x, op.const([1], i64)])
