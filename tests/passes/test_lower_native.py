"""lower_native: the WaveRNN Loop becomes one WaveRNNLoop node computing the same thing.

The lowered model is run by ``native_emulation`` (ORT up to the op, the op's documented
semantics in numpy), so the lowering is checked independently of the C++ library.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import waveopt
from native_emulation import run_lowered
from onnx_builders import cnn_model
from reference_check import assert_samples_match
from waveopt.model_info import example_inputs
from waveopt.runtime import session


def lower(model):
    result = waveopt.optimize(model, passes=["lower_native"])
    return result.model, result.reports[0]


def outputs(model, feed):
    return dict(zip([o.name for o in model.graph.output], session(model).run(None, feed)))


@pytest.mark.parametrize("name", ["raw", "mol", "odd", "odd_mol"])
def test_teacher_forced_logits_match(name, exports):
    original = exports(name, teacher_forced=True)
    lowered, report = lower(original)
    assert report.modified, report.summary
    ops = [n.op_type for n in lowered.graph.node]
    assert "Loop" not in ops and ops.count("WaveRNNLoop") == 1
    feed = example_inputs(original, frames=3, batch=2, seed=8)
    expected = outputs(original, feed)["logits"]
    got = run_lowered(lowered, feed)["logits"]
    assert np.abs(got - expected).max() <= 1e-4


@pytest.mark.parametrize("name", ["raw", "mol", "odd_mol"])
def test_free_running_samples_match(name, exports, models):
    original = exports(name)
    lowered, report = lower(original)
    assert report.modified, report.summary
    model = models(name)
    frames = -(-2000 // model.hop_length) + 1
    feed = example_inputs(original, frames=frames, seed=9)
    expected = outputs(original, feed)
    got = run_lowered(lowered, feed)
    agreed = assert_samples_match(model, feed["mels"], feed["noise"], expected["samples"], got["samples"])
    if agreed == len(got["samples"]):
        np.testing.assert_allclose(got["wave"], expected["wave"], atol=1e-4)


def test_folded_model_lowers(exports):
    original = exports("raw", fold=(600, 100))
    lowered, report = lower(original)
    assert report.modified
    feed = example_inputs(original, frames=6, seed=2)
    np.testing.assert_allclose(run_lowered(lowered, feed)["wave"], outputs(original, feed)["wave"], atol=1e-5)


def test_lowered_model_declares_the_op_domain(exports):
    lowered, _ = lower(exports("raw"))
    assert {o.domain: o.version for o in lowered.opset_import}.get("waveopt.ops") == 1
    (op,) = [n for n in lowered.graph.node if n.op_type == "WaveRNNLoop"]
    assert op.domain == "waveopt.ops"


def test_idempotent(exports):
    once, _ = lower(exports("mol"))
    twice, report = lower(once)
    assert not report.modified and report.summary.startswith("not applicable")
    assert twice.SerializeToString() == once.SerializeToString()


def test_not_applicable_without_a_loop():
    cnn = cnn_model()
    result, report = lower(cnn)
    assert not report.modified
    assert result.SerializeToString() == cnn.SerializeToString()


def test_a_different_sampler_is_not_lowered(exports):
    """An argmax sampler is not WaveRNN's: the Loop must stay."""
    model = onnx.ModelProto()
    model.CopyFrom(exports("raw"))
    loop = next(n for n in model.graph.node if n.op_type == "Loop")
    body = loop.attribute[0].g
    less = next(n for n in body.node if n.op_type == "Less")
    # cdf < u  ->  cdf < 2  (every class counts: always the last class)
    two = onnx.helper.make_tensor("two_for_test", onnx.TensorProto.FLOAT, [], [2.0])
    model.graph.initializer.append(two)
    less.input[1] = "two_for_test"
    result, report = lower(model)
    ops = [n.op_type for n in result.graph.node]
    assert "Loop" in ops and "WaveRNNLoop" not in ops
    assert "sampler" in report.summary
    from waveopt import ops as native_ops

    if native_ops.built():  # the body's dense layers became FusedDense: still the same model
        feed = example_inputs(model, frames=2, seed=4)
        assert waveopt.compare_models(model, result, feed).ok


def _dense_model(use_gemm: bool, in_loop_body: bool = False) -> onnx.ModelProto:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    nodes = [helper.make_node("Concat", ["x1", "x2"], ["cat"], axis=-1)]
    if use_gemm:
        nodes.append(helper.make_node("Gemm", ["cat", "W_t", "b"], ["lin"], transB=1))
        inits = [numpy_helper.from_array(w.T.copy(), "W_t"), numpy_helper.from_array(b, "b")]
    else:
        nodes += [helper.make_node("MatMul", ["cat", "W"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["lin"])]
        inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")]
    nodes.append(helper.make_node("Relu", ["lin"], ["y"]))
    graph = helper.make_graph(nodes, "dense",
                              [helper.make_tensor_value_info("x1", TensorProto.FLOAT, ["B", 3]),
                               helper.make_tensor_value_info("x2", TensorProto.FLOAT, ["B", 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return onnx.shape_inference.infer_shapes(model)


@pytest.mark.parametrize("use_gemm", [True, False])
def test_concat_matmul_relu_becomes_fused_dense(use_gemm):
    pytest.importorskip("waveopt.ops")
    from waveopt import ops

    if not ops.built():
        pytest.skip("native ops library not built (make native)")
    original = _dense_model(use_gemm)
    lowered, report = lower(original)
    assert report.modified and "FusedDense" in report.summary
    assert [n.op_type for n in lowered.graph.node] == ["FusedDense"]
    feed = {"x1": np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32),
            "x2": np.random.default_rng(2).standard_normal((5, 5)).astype(np.float32)}
    expected = session(original).run(None, feed)[0]
    got = session(lowered).run(None, feed)[0]  # registers the op library
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("name, teacher_forced", [("raw", False), ("mol", False), ("odd", True), ("odd_mol", True)])
def test_native_preset_runs_with_the_op_library(name, teacher_forced, exports):
    """`--target native` end to end: the real C++ op in ORT against the unoptimized graph."""
    from waveopt import ops

    if not ops.built():
        pytest.skip("native ops library not built (make native)")
    original = exports(name, teacher_forced=teacher_forced)
    native = waveopt.optimize(original, preset="native").model
    assert "WaveRNNLoop" in [n.op_type for n in native.graph.node]
    feed = example_inputs(original, frames=8, seed=12)  # >= 2000 steps
    result = waveopt.compare_models(original, native, feed)
    assert result.ok, result.summary()
