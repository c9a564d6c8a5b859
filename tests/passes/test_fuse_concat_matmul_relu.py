"""fuse_concat_matmul_relu: Relu(MatMul + terms) in the form ONNX Runtime runs as FusedGemm."""

from __future__ import annotations

from collections import Counter

import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

from loop_pass_cases import CASE_IDS, CASES, LOOP_PASSES, assert_exact, optimized, original, serialized
from waveopt.graph import to_ir
from waveopt.passes import FuseConcatMatMulReluPass

BEFORE_FUSE = tuple(LOOP_PASSES[:-1])
ALL = tuple(LOOP_PASSES)


def _ort_loop_body(model: onnx.ModelProto, level: ort.GraphOptimizationLevel, tmp_path) -> onnx.GraphProto:
    """The Loop body of the model as ONNX Runtime optimized it (saved with optimized_model_filepath)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.optimized_model_filepath = str(tmp_path / f"ort_{int(level)}.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    saved = onnx.load(options.optimized_model_filepath)
    (loop,) = [n for n in saved.graph.node if n.op_type == "Loop"]
    return next(a.g for a in loop.attribute if a.name == "body")


def _fused_relu_gemms(body: onnx.GraphProto) -> int:
    return sum(1 for n in body.node if n.op_type == "FusedGemm"
               and any(a.name == "activation" and a.s == b"Relu" for a in n.attribute))


@pytest.mark.parametrize("level", [ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                   ort.GraphOptimizationLevel.ORT_ENABLE_ALL], ids=["extended", "all"])
@pytest.mark.parametrize("source", ["raw", "ts"])
def test_onnxruntime_fuses_fc1_and_fc2_inside_the_loop_body(source, level, tmp_path):
    # As exported, fc1/fc2 are Relu(Gemm) and ORT fuses them ...
    if source == "raw":
        exported = _ort_loop_body(original(source, "free"), level, tmp_path)
        assert _fused_relu_gemms(exported) == 2
    # ... split/hoist/fold leave Relu(MatMul + rank-1 + hoisted part), which it does not fuse ...
    unfused = _ort_loop_body(optimized(source, "free", BEFORE_FUSE).model, level, tmp_path)
    assert _fused_relu_gemms(unfused) == 0 and Counter(n.op_type for n in unfused.node)["Relu"] == 2
    # ... and after this pass it does again: no Relu is left in the body.
    fused = _ort_loop_body(optimized(source, "free", ALL).model, level, tmp_path)
    assert _fused_relu_gemms(fused) == 2
    assert "Relu" not in {n.op_type for n in fused.node}


@pytest.mark.parametrize(("source", "form"), CASES, ids=CASE_IDS)
def test_fuses_and_is_exact(source, form):
    result = optimized(source, form, ALL)
    assert result.reports[-1].summary == "fused 2 Relu(MatMul + terms) into Gemm + Relu"
    body = to_ir(result.model).graph
    (loop,) = [n for n in body if n.op_type == "Loop"]
    relus = [n for n in loop.attributes["body"].as_graph() if n.op_type == "Relu"]
    assert [r.inputs[0].producer().op_type for r in relus] == ["Gemm", "Gemm"]
    assert_exact(source, form, result.model)


def test_not_applicable_on_the_export():
    """The export's Relu(Gemm) is already ORT's fused form."""
    ir_model = ir.serde.deserialize_model(original("raw", "free"))
    before = serialized(ir_model)
    p = FuseConcatMatMulReluPass()
    assert p(ir_model).modified is False
    assert p.summary == "not applicable"
    assert serialized(ir_model) == before
