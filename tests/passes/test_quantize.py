"""quantize: dynamic int8 products in Loop bodies (what ONNX Runtime runs, how close it is)
and the ``quant`` attributes of waveopt's custom ops."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_builders import cnn_model

from waveopt.check import cpu_session
from waveopt.graph import to_ir, to_proto
from waveopt.model_info import example_inputs
from waveopt.passes import QuantizePass
from waveopt.passes import ort_loop_body_op_types
from waveopt.pipeline import optimize
from waveopt.provenance import MODULE_KEY

OPSET = [helper.make_opsetid("", 18)]
SUMMARY = "quantized {} MatMul/Gemm in Loop bodies to dynamic int8 (per-column weight scales)"


def _quantize(model, **options) -> tuple[onnx.ModelProto, QuantizePass]:
    ir_model = to_ir(onnx.ModelProto.FromString(to_proto(model).SerializeToString()))
    p = QuantizePass(**options)
    p(ir_model)
    return to_proto(ir_model), p


def _serialized(model: ir.Model) -> bytes:
    return ir.serde.serialize_model(model).SerializeToString()


def _loop_body(model: onnx.ModelProto) -> onnx.GraphProto:
    (loop,) = [n for n in model.graph.node if n.op_type == "Loop"]
    return next(a.g for a in loop.attribute if a.name == "body")


def _logit_snr(ref: np.ndarray, out: np.ndarray) -> float:
    """SNR in dB of per-step logits, each step's mean over the classes removed from both
    (a softmax does not see it)."""
    ref = ref - ref.mean(axis=-1, keepdims=True)
    out = out - out.mean(axis=-1, keepdims=True)
    return float(10 * np.log10(np.sum(ref ** 2) / np.sum((ref - out) ** 2)))


@pytest.fixture(scope="module")
def raw_portable(exports):
    return optimize(exports("raw", teacher_forced=True), preset="portable").model


# Measured on the seed-1 demo models (frames as below, ORT 1.32 CPU with AVX512-VNNI): raw
# 40.5 dB / argmax 99.1 %, raw+portable 45.1 dB / 99.3 %, mol 39.7 dB / 100 %, odd 38.4 dB /
# 97.7 % (with 8 frames: raw 40.4 / 98.1, portable 42.9 / 99.1, mol 38.0 / 97.9). The floors
# leave 8 dB and a few points of margin for other CPUs' kernels.
@pytest.mark.parametrize(("name", "portable", "frames"),
                         [("raw", False, 2), ("raw", True, 2), ("mol", False, 2), ("odd", False, 8)],
                         ids=["raw", "raw-portable", "mol", "odd"])
def test_logits_stay_close_to_fp32(name, portable, frames, exports, raw_portable):
    model = raw_portable if portable else exports(name, teacher_forced=True)
    quantized, p = _quantize(model)
    assert p.summary == SUMMARY.format(6 if portable else 8)
    inputs = example_inputs(model, frames=frames)
    ref = cpu_session(model).run(None, inputs)[0]
    out = cpu_session(quantized).run(None, inputs)[0]
    assert ref.shape == out.shape and ref.ndim == 3  # [T, B, C] per-step logits
    assert _logit_snr(ref, out) >= 30.0
    assert np.mean(ref.argmax(-1) == out.argmax(-1)) >= 0.95


@pytest.mark.parametrize("portable", [False, True], ids=["export", "portable"])
def test_onnxruntime_runs_integer_kernels_in_the_loop_body(portable, exports, raw_portable):
    model = raw_portable if portable else exports("raw", teacher_forced=True)
    quantized, _ = _quantize(model)
    products = 6 if portable else 8
    # Our graph: no float product with a constant weight is left in the body ...
    body = _loop_body(quantized)
    inits = {t.name for t in quantized.graph.initializer}
    assert not [n for n in body.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in inits]
    assert sum(n.op_type == "MatMulInteger" for n in body.node) == products
    # ... the float weights are gone, and the conditioning network stays fp32.
    assert not any(t.name.endswith(("fc1.weight", "rnn1.weight_hh")) for t in quantized.graph.initializer)
    assert "DynamicQuantizeLinear" not in {n.op_type for n in quantized.graph.node}
    # ORT fuses every DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul into one kernel.
    ops = ort_loop_body_op_types(quantized)
    assert ops["DynamicQuantizeMatMul"] == products
    assert not {"MatMul", "Gemm", "FusedGemm", "MatMulInteger", "MatMulIntegerToFloat",
                "DynamicQuantizeLinear", "Cast"} & set(ops)


def test_new_nodes_keep_the_module_of_the_product(exports):
    model = exports("raw", teacher_forced=True)
    modules = {{p.key: p.value for p in n.metadata_props}.get(MODULE_KEY)
               for n in _loop_body(model).node if n.op_type == "Gemm"}
    quantized, _ = _quantize(model)
    new = [n for n in _loop_body(quantized).node
           if n.op_type in ("DynamicQuantizeLinear", "MatMulInteger", "Cast")]
    assert {{p.key: p.value for p in n.metadata_props}.get(MODULE_KEY) for n in new} == modules
    assert modules >= {"fc1", "fc2", "fc3", "rnn1", "rnn2"}


def _gemm_loop_model() -> onnx.ModelProto:
    """A Loop whose body has Gemm(transB, alpha, beta, constant C), Gemm(beta, computed C),
    MatMul with a Constant weight (its output a scan output) and MatMul of two activations."""
    rng = np.random.default_rng(0)
    h = 8
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in [
        ("Wt", rng.standard_normal((h, h))), ("c", rng.standard_normal(h)),
        ("W2", rng.standard_normal((h, h)))]]
    body = helper.make_graph([
        helper.make_node("Gemm", ["x", "Wt", "c"], ["y1"], transB=1, alpha=0.5, beta=2.0),
        helper.make_node("Tanh", ["x"], ["t"]),
        helper.make_node("Gemm", ["x", "W2", "t"], ["y2"], beta=3.0),
        helper.make_node("Constant", [], ["W3"], value=numpy_helper.from_array(
            rng.standard_normal((h, h)).astype(np.float32), "W3")),
        helper.make_node("MatMul", ["x", "W3"], ["y3"]),
        helper.make_node("MatMul", ["t", "y3"], ["y4"]),  # no constant weight: stays fp32
        helper.make_node("Sum", ["y1", "y2", "y3"], ["s"]),
        helper.make_node("Tanh", ["s"], ["x_new"]),
        helper.make_node("Identity", ["cond_in"], ["cond_out"]),
    ], "body", [
        helper.make_tensor_value_info("i", TensorProto.INT64, []),
        helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [h, h]),
    ], [
        helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
        helper.make_tensor_value_info("x_new", TensorProto.FLOAT, [h, h]),
        helper.make_tensor_value_info("y3", TensorProto.FLOAT, [h, h]),
        helper.make_tensor_value_info("y4", TensorProto.FLOAT, [h, h]),
    ])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["T", ""], ["x_last", "ys", "zs"], body=body)], "g",
        [helper.make_tensor_value_info("T", TensorProto.INT64, []),
         helper.make_tensor_value_info("x0", TensorProto.FLOAT, [h, h])],
        [helper.make_tensor_value_info("x_last", TensorProto.FLOAT, [h, h]),
         helper.make_tensor_value_info("ys", TensorProto.FLOAT, [None, h, h]),
         helper.make_tensor_value_info("zs", TensorProto.FLOAT, [None, h, h])], inits)
    graph.node[0].input[:] = ["T", "", "x0"]
    return helper.make_model(graph, opset_imports=OPSET, ir_version=8)


def test_gemm_attributes_are_folded_and_constant_weights_in_the_body_are_taken():
    model = _gemm_loop_model()
    quantized, p = _quantize(model)
    assert p.summary == SUMMARY.format(3)
    body = _loop_body(quantized)
    assert [n.op_type for n in body.node].count("MatMul") == 1  # MatMul(t, y3)
    assert "Constant" not in {n.op_type for n in body.node}
    assert not {"Wt", "c", "W2"} & {t.name for t in quantized.graph.initializer}
    x0 = np.random.default_rng(1).standard_normal((8, 8)).astype(np.float32)
    inputs = {"T": np.array(3, np.int64), "x0": x0}
    for ref, out in zip(cpu_session(model).run(None, inputs), cpu_session(quantized).run(None, inputs)):
        assert 10 * np.log10(np.sum(ref ** 2) / np.sum((ref - out) ** 2)) >= 30.0
    # x feeds three products: one DynamicQuantizeLinear, which ORT cannot fuse into each.
    assert [n.op_type for n in body.node].count("DynamicQuantizeLinear") == 1
    ops = ort_loop_body_op_types(quantized)
    assert ops["MatMulIntegerToFloat"] == 3 and ops["DynamicQuantizeLinear"] == 1


def test_is_idempotent():
    model = to_ir(_quantize(_gemm_loop_model())[0])
    before = _serialized(model)
    p = QuantizePass()
    assert p(model).modified is False
    assert p.summary == "not applicable"
    assert _serialized(model) == before


@pytest.mark.parametrize("make", [cnn_model, _gemm_loop_model], ids=["cnn", "loop-bits16"])
def test_not_applicable(make):
    """No Loop in a CNN; with bits=16 standard ONNX has no integer op to use."""
    model = ir.serde.deserialize_model(make())
    before = _serialized(model)
    p = QuantizePass(bits=16) if make is _gemm_loop_model else QuantizePass()
    assert p(model).modified is False
    assert _serialized(model) == before
    if make is cnn_model:
        assert p.summary == "not applicable"
    else:
        assert p.summary == ("not applicable (bits=16: standard ONNX has no 16-bit integer MatMul, "
                             "3 MatMul/Gemm in Loop bodies left fp32)")


def _native_model() -> onnx.ModelProto:
    """waveopt.ops nodes as lower_native leaves them (only their structure matters here)."""
    nodes = [helper.make_node("FusedDense", ["x", "W", "b"], ["d"], domain="waveopt.ops"),
             helper.make_node("WaveRNNLoop", ["d"], ["samples"], domain="waveopt.ops")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("samples", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones((4, 4), np.float32), "W"),
         numpy_helper.from_array(np.zeros(4, np.float32), "b")])
    opsets = [*OPSET, helper.make_opsetid("waveopt.ops", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


@pytest.mark.parametrize("bits", [8, 16])
def test_native_ops_get_quant_attributes(bits):
    model = ir.serde.deserialize_model(_native_model())
    p = QuantizePass(bits=bits, act_ranges=[3.5, 2.0])
    assert p(model).modified
    assert p.summary == f"set quant=int{bits} on 1 FusedDense; set quant=int{bits} on 1 WaveRNNLoop"
    dense, loop = list(model.graph)
    assert dense.attributes["quant"].value == loop.attributes["quant"].value == f"int{bits}"
    assert list(loop.attributes["act_ranges"].value) == [3.5, 2.0]
    assert "act_ranges" not in dense.attributes
    # A second run (even with other options) leaves what is quantized as it is.
    before = _serialized(model)
    again = QuantizePass(bits=24 - bits, act_ranges=[1.0, 1.0])
    assert again(model).modified is False and _serialized(model) == before


@pytest.mark.parametrize("ranges", [None, [1.0], [1.0, 0.0], [1.0, float("nan")]])
def test_wavernn_loop_needs_valid_act_ranges(ranges):
    model = ir.serde.deserialize_model(_native_model())
    before = _serialized(model)
    with pytest.raises(ValueError, match="act_ranges"):
        QuantizePass(act_ranges=ranges)(model)
    assert _serialized(model) == before  # nothing half-done (FusedDense comes first)


def test_pipeline_passes_options():
    result = optimize(_native_model(), passes=["quantize"],
                      pass_options={"quantize": {"bits": 16, "act_ranges": (4.0, 3.0)}})
    loop = next(n for n in result.model.graph.node if n.op_type == "WaveRNNLoop")
    assert {a.name: helper.get_attribute_value(a) for a in loop.attribute}["quant"] == b"int16"
