"""Quantize the per-sample loop: dynamic int8 products in Loop bodies, ``quant`` on waveopt's ops.

Before (a Loop body: the per-sample step)::

    y = Gemm(x, W, C, transB=1)                    # or MatMul(x, W); W a constant

After::

    xq, xs, xz = DynamicQuantizeLinear(x)          # u8, per-tensor scale, zero point
    p = MatMulInteger(xq, Wq, xz, w_zero)          # Wq int8 [K, N], w_zero int8 zeros [N]
    y = Add(Mul(Cast(p, to=FLOAT), Mul(xs, w_scale)), C)   # w_scale [N], per column

which ONNX Runtime's CPU fusions (level extended) turn into one ``DynamicQuantizeMatMul``
(com.microsoft) per product: MatMulIntegerToFloatFusion, then DynamicQuantizeMatMulFusion,
which needs x to be quantized for that product alone; where x feeds several products ORT
runs one DynamicQuantizeLinear and a ``MatMulIntegerToFloat`` per product. With
waveopt's custom ops, ``WaveRNNLoop`` gets ``quant`` and ``act_ranges`` attributes and
``FusedDense`` gets ``quant``: the op quantizes itself when its session is created.

Not exact: the weights are rounded to 7 bits per output column (see the class docstring)
and the activations to 8 bits per product and step, so outputs differ from fp32 by
quantization noise (logit SNR and argmax agreement: tests/test_quantize_pass.py). Only Loop bodies are
rewritten: the conditioning network outside the loop runs once per utterance and stays
fp32. Does not apply to products without a constant 2-D float weight, to Gemm with
transA=1, to an opset below 11, or, for bits=16, to any standard-ONNX product (ONNX has
no 16-bit integer MatMul).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from waveopt.passes._ir import DOMAIN, Builder, const_array, is_onnx_op, loop_bodies, remove_dead
from waveopt.passes._quant_ops import quantize_columns
from waveopt.passes.base import WaveoptPass

__all__ = ["QuantizePass"]

WEIGHT_QMAX = 63  # 7-bit weights: see the class docstring
QUANT_OPS = ("WaveRNNLoop", "FusedDense")


class QuantizePass(WaveoptPass):
    """Quantize the matrix products of the per-sample loop to ``bits`` (8 or 16).

    1. In Loop bodies (nested graphs included, never the main graph), with bits=8:
       ``MatMul(x, W)`` and ``Gemm(x, W, C)`` (transA=0, any transB, alpha and beta
       folded) with W a constant 2-D float32 tensor — an initializer of any enclosing
       graph or a Constant — become the dynamic int8 pattern above. W is quantized
       symmetrically per output column (``quantize_columns``: ±63, round to nearest);
       the float W (and a folded C) is removed once nothing reads it. Products of the
       same x in one graph share its DynamicQuantizeLinear (ORT's common-subexpression
       elimination would merge them anyway). A constant C is the Add's second input,
       where ORT folds it into the fused kernel's bias.
    2. With bits=16 step 1 does nothing (the summary says how many products stayed fp32).
    3. In every graph, ``waveopt.ops::WaveRNNLoop`` gets ``quant`` = "int8"/"int16" and
       ``act_ranges`` (the calibrated peaks of relu(fc1) and relu(fc2)); ``FusedDense``
       gets ``quant``. A WaveRNNLoop to quantize without valid ``act_ranges`` is a
       ValueError.
    4. Already-quantized products (MatMulInteger) and ops that carry ``quant`` are left
       alone, so a second run changes nothing.

    Weights use 7 bits (±63, ORT's "reduce_range"): on x86 CPUs with AVX2 but no VNNI (the
    Zen 3 servers waveopt targets) ORT's u8 x s8 kernels add products in pairs into int16
    with saturation (vpmaddubsw), and 255·127·2 > 2^15 could saturate; 255·63·2 cannot.
    It costs ~6 dB of logit SNR on every CPU, so results do not depend on the CPU.
    """

    name = "quantize"
    description = ("dynamic int8 MatMul/Gemm in Loop bodies; quant attributes on waveopt.ops "
                   "WaveRNNLoop/FusedDense")

    def __init__(self, bits: int = 8, act_ranges: Sequence[float] | None = None) -> None:
        super().__init__()
        if bits not in (8, 16):
            raise ValueError(f"quantize: bits must be 8 or 16, not {bits!r}")
        self.bits = bits
        self.act_ranges = None if act_ranges is None else _checked_ranges(act_ranges)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        quant = f"int{self.bits}"
        native = [n for n in ir.traversal.RecursiveGraphIterator(model.graph)
                  if n.domain == DOMAIN and n.op_type in QUANT_OPS and "quant" not in n.attributes]
        if self.act_ranges is None and any(n.op_type == "WaveRNNLoop" for n in native):
            raise ValueError("quantize: a WaveRNNLoop needs act_ranges (the calibrated peaks of "
                             "relu(fc1) and relu(fc2) outputs)")
        marked: dict[str, int] = {}
        for node in native:
            node.attributes["quant"] = ir.AttrString("quant", quant)
            if node.op_type == "WaveRNNLoop":
                node.attributes["act_ranges"] = ir.AttrFloat32s("act_ranges", list(self.act_ranges))
            marked[node.op_type] = marked.get(node.op_type, 0) + 1

        products = [n for n in _loop_body_nodes(model.graph) if _weight_of(n) is not None]
        quantized, note = 0, ""
        if self.bits == 16 and products:
            note = (f"bits=16: standard ONNX has no 16-bit integer MatMul, {len(products)} "
                    "MatMul/Gemm in Loop bodies left fp32")
        elif products and model.opset_imports.get("", 0) < 11:
            note = "opset < 11 has no DynamicQuantizeLinear"
        elif products:
            builder, quantized_inputs = Builder(model, "quant"), {}
            for node in products:
                _quantize_product(node, builder, quantized_inputs)
            quantized = len(products)

        done = [f"quantized {quantized} MatMul/Gemm in Loop bodies to dynamic int8 (per-column weight scales)"
                if quantized else "",
                *(f"set quant={quant} on {count} {op}" for op, count in marked.items())]
        return self.result(model, "; ".join(d for d in done if d), note)


def _checked_ranges(values: Sequence[float]) -> tuple[float, float]:
    ranges = tuple(float(v) for v in values)
    if len(ranges) != 2 or not all(math.isfinite(v) and v > 0 for v in ranges):
        raise ValueError(f"quantize: act_ranges must be two positive finite floats, not {list(values)!r}")
    return ranges


def _loop_body_nodes(graph: ir.Graph) -> list[ir.Node]:
    """Every node inside a Loop body (nested graphs included), each once."""
    seen: dict[ir.Node, None] = {}
    for _, body in loop_bodies(graph):
        for node in ir.traversal.RecursiveGraphIterator(body):
            seen.setdefault(node, None)
    return list(seen)


def _weight_of(node: ir.Node) -> np.ndarray | None:
    """W as [K, N] float32 when ``node`` is a product this pass quantizes, else None."""
    if not is_onnx_op(node, "MatMul", "Gemm") or len(node.inputs) < 2:
        return None
    if node.op_type == "Gemm" and node.attributes.get_int("transA", 0):
        return None
    weight = const_array(node.inputs[1])
    if weight is None or weight.ndim != 2 or weight.dtype != np.float32:
        return None
    return weight.T if node.op_type == "Gemm" and node.attributes.get_int("transB", 0) else weight


def _typed(value: ir.Value, dtype: ir.DataType, dims: Sequence | None) -> ir.Value:
    value.type = ir.TensorType(dtype)
    value.shape = None if dims is None else ir.Shape(list(dims))
    return value


def _quantized_input(x: ir.Value, node: ir.Node, b: Builder, done: dict) -> list[ir.Value]:
    """``DynamicQuantizeLinear(x)``'s outputs, made once per ``x`` (before its first reader)."""
    key = (node.graph, x)
    if key not in done:
        dql = b.node("DynamicQuantizeLinear", [x], like=node, num_outputs=3)
        dql.metadata_props.update(node.metadata_props)
        for out, dtype, dims in zip(dql.outputs, (ir.DataType.UINT8, ir.DataType.FLOAT, ir.DataType.UINT8),
                                    (x.shape.dims if x.shape is not None else None, [], [])):
            _typed(out, dtype, dims)
        node.graph.insert_before(node, dql)
        done[key] = list(dql.outputs)
    return done[key]


def _quantize_product(node: ir.Node, b: Builder, quantized_inputs: dict) -> None:
    """Replace the product ``node`` (one ``_weight_of`` accepts) by the dynamic int8 pattern."""
    weight = _weight_of(node)
    x, w_in = node.inputs[0], node.inputs[1]
    c_in = node.inputs[2] if len(node.inputs) > 2 else None
    scale_factor = node.attributes.get_float("alpha", 1.0) if node.op_type == "Gemm" else 1.0
    beta = node.attributes.get_float("beta", 1.0) if node.op_type == "Gemm" else 1.0
    q, w_scale = quantize_columns(weight, 8, qmax=WEIGHT_QMAX)
    n = q.shape[1]

    xq, xs, xz = _quantized_input(x, node, b, quantized_inputs)
    out_dims = node.outputs[0].shape.dims if node.outputs[0].shape is not None else None
    mmi = b.node("MatMulInteger", [xq, b.constant(q, "Wq"), xz, b.constant(np.zeros(n, np.int8), "w_zero")],
                 like=node)
    cast = b.node("Cast", [_typed(mmi.outputs[0], ir.DataType.INT32, out_dims)], like=node,
                  to=int(ir.DataType.FLOAT))
    # Mul(x_scale, w_scale) in this order: ORT's fusion takes the inputs as (A_scale, B_scale).
    w_scale = b.constant((w_scale * np.float32(scale_factor)).astype(np.float32), "w_scale")
    scales = b.node("Mul", [xs, w_scale], like=node)
    mul = b.node("Mul", [_typed(cast.outputs[0], ir.DataType.FLOAT, out_dims),
                         _typed(scales.outputs[0], ir.DataType.FLOAT, [n])], like=node)
    new_nodes = [mmi, cast, scales, mul]
    result = mul.outputs[0]
    if c_in is not None:
        bias = c_in
        if beta != 1.0:
            c = const_array(c_in)
            if c is not None:
                bias = b.constant((c * np.float32(beta)).astype(c.dtype), "bias")
            else:
                scaled = b.node("Mul", [c_in, b.constant(np.array(beta, np.float32), "beta")], like=node)
                new_nodes.append(scaled)
                bias = _typed(scaled.outputs[0], ir.DataType.FLOAT,
                              c_in.shape.dims if c_in.shape is not None else None)
        add = b.node("Add", [_typed(result, ir.DataType.FLOAT, out_dims), bias], like=node)
        new_nodes.append(add)
        result = add.outputs[0]
    for new in new_nodes:  # every metadata entry of the replaced node, not only the module
        new.metadata_props.update(node.metadata_props)

    graph, old = node.graph, node.outputs[0]
    graph.insert_before(node, new_nodes)
    result.type, result.shape = old.type, old.shape
    name = old.name
    old.replace_all_uses_with(result, replace_graph_outputs=True)
    old.name = b.name("replaced")
    result.name = name  # the product keeps its name: graph outputs and readers by name see no change
    graph.remove(node, safe=True)
    remove_dead([w_in, c_in])
