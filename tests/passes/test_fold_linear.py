"""fold_linear: composed linear maps, sums regrouped into per-step products + one hoistable part."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

import waveopt
from loop_pass_cases import (
    CASE_IDS, CASES, assert_exact, expected_macs, loop_body, optimized, original, serialized, upto,
)
from waveopt.graph import to_ir, to_proto
from waveopt.passes import FoldLinearPass

FOLD = upto("fold_linear") + ("hoist_aux_projections",)  # split, hoist, fold, hoist


@pytest.mark.parametrize(("source", "form"), CASES, ids=CASE_IDS)
def test_folds_to_the_recurrent_products_and_is_exact(source, form):
    result = optimized(source, form, FOLD)
    assert result.reports[2].modified
    assert waveopt.graph_stats(result.model).macs_per_step == expected_macs(source, form, "final")
    assert waveopt.graph_stats(original(source, form)).macs_per_step == expected_macs(source, form, "export")
    assert_exact(source, form, result.model)


def _state_outputs(body: ir.Graph) -> set[ir.Value]:
    return {v for v in body.outputs[1:] if v.shape is None or v.shape.rank() != 1}


@pytest.mark.parametrize("source", ["raw", "ts"])
def test_fc1_reads_h1_plus_h2_once(source):
    body = loop_body(optimized(source, "free", FOLD).model)
    states = _state_outputs(body)
    readers = []
    for node in body:
        if node.op_type in ("MatMul", "Gemm"):
            add = node.inputs[0].producer()
            if add is not None and add.op_type == "Add" and set(add.inputs) <= states:
                readers.append(node)
    (fc1,) = readers  # exactly one product of (h1 + h2): fc1's
    rnn, fc = (64, 48) if source == "raw" else (40, 24)
    assert fc1.inputs[1].const_value.numpy().shape == (rnn, fc)


@pytest.mark.parametrize("source", ["raw", "ts"])
def test_fed_back_sample_reaches_layers_through_rank1_muls(source):
    body = loop_body(optimized(source, "free", FOLD).model)
    (x,) = [v for v in body.inputs[2:] if v.shape is not None and v.shape[-1] == 1]
    rnn, fc = (64, 48) if source == "raw" else (40, 24)
    widths = sorted(c.inputs[1].const_value.numpy().shape for c in x.consumers() if c.op_type == "Mul")
    assert widths == [(1, fc), (1, 3 * rnn), (1, 3 * rnn)]  # fc1, rnn1's and rnn2's input projections
    assert all(c.op_type == "Mul" for c in x.consumers())
    for node in body:  # and no K=1 product is left
        if node.op_type in ("MatMul", "Gemm") and node.inputs[1].const_value is not None:
            assert 1 not in node.inputs[1].const_value.numpy().shape


def _rank1_loop(w: np.ndarray, v: np.ndarray) -> onnx.ModelProto:
    """y = MatMul(Add(Mul(s, w), c_t), V) with s = tanh(mean(y)) fed back; y is scanned out."""
    body = helper.make_graph(
        [helper.make_node("Gather", ["c", "t"], ["c_t"], axis=0),
         helper.make_node("Mul", ["s", "w"], ["sw"]),
         helper.make_node("Add", ["sw", "c_t"], ["i"]),
         helper.make_node("MatMul", ["i", "V"], ["y"]),
         helper.make_node("ReduceMean", ["y", "ax"], ["m"], keepdims=1),
         helper.make_node("Tanh", ["m"], ["s_next"]),
         helper.make_node("Identity", ["y"], ["y_out"]),
         helper.make_node("Identity", ["cond"], ["cond_out"])],
        "body",
        [helper.make_tensor_value_info("t", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, ["B", 1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("s_next", TensorProto.FLOAT, ["B", 1]),
         helper.make_tensor_value_info("y_out", TensorProto.FLOAT, ["B", v.shape[1]])])
    graph = helper.make_graph(
        [helper.make_node("Shape", ["c"], ["T1"], start=0, end=1), helper.make_node("Squeeze", ["T1"], ["T"]),
         helper.make_node("Loop", ["T", "", "s0"], ["s_last", "ys"], body=body)],
        "rank1",
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, ["T", "B", v.shape[0]]),
         helper.make_tensor_value_info("s0", TensorProto.FLOAT, ["B", 1])],
        [helper.make_tensor_value_info("ys", TensorProto.FLOAT, ["T", "B", v.shape[1]])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(v, "V"),
                     numpy_helper.from_array(np.array([1], np.int64), "ax")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


def test_composed_maps_are_products_in_float64():
    rng = np.random.default_rng(7)
    w = rng.standard_normal((1, 33)).astype(np.float32)
    v = rng.standard_normal((33, 9)).astype(np.float32)
    model = _rank1_loop(w, v)
    ir_model = to_ir(model)
    p = FoldLinearPass()
    p(ir_model)
    assert p.summary == "rebuilt 1 linear expressions"
    body = loop_body(ir_model)
    (mul,) = [n for n in body if n.op_type == "Mul"]
    np.testing.assert_array_equal(mul.inputs[1].const_value.numpy(),
                                  (w.astype(np.float64) @ v.astype(np.float64)).astype(np.float32))
    feed = {"c": rng.standard_normal((20, 3, 33)).astype(np.float32),
            "s0": rng.standard_normal((3, 1)).astype(np.float32)}
    result = waveopt.compare_models(model, to_proto(ir_model), feed, atol=1e-5)
    assert result.ok, result.summary()


def test_not_applicable_on_the_export():
    """In the export as it is, composing I's map into rnn1's
    input projection would cost more per step (89x192 instead of 64x192): left alone."""
    ir_model = ir.serde.deserialize_model(original("raw", "free"))
    before = serialized(ir_model)
    p = FoldLinearPass()
    assert p(ir_model).modified is False
    assert p.summary == "not applicable"
    assert serialized(ir_model) == before
