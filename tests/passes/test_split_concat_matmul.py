"""split_concat_matmul: per-step and hoistable parts of a projection of a Concat."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

import waveopt
from loop_pass_cases import CASE_IDS, CASES, assert_exact, loop_body, optimized, reads_state, serialized, upto
from waveopt.graph import to_ir, to_proto
from waveopt.passes import SplitConcatMatMulPass

SPLIT = upto("split_concat_matmul")


@pytest.mark.parametrize(("source", "form"), CASES, ids=CASE_IDS)
def test_splits_and_is_exact(source, form):
    result = optimized(source, form, SPLIT)
    # I (free-running: x is carried), rnn2's input, fc1 and fc2 mix per-step and aux parts;
    # teacher-forced, I's Concat is all rows of outer tensors and stays whole for hoisting.
    products = 3 if form == "tf" else 4
    assert result.reports[0].summary == f"split {products} products of a Concat"
    body = loop_body(result.model)
    for node in body:  # no product of a Concat mixes per-step parts with parts of outer tensors
        concat = node.inputs[0].producer() if node.op_type in ("MatMul", "Gemm") else None
        if concat is not None and concat.op_type == "Concat":
            assert len({reads_state(part, body) for part in concat.inputs}) == 1
    assert_exact(source, form, result.model)


def test_fed_back_sample_becomes_a_rank1_mul():
    body = loop_body(optimized("raw", "free", SPLIT).model)
    x = body.inputs[2]  # the previous sample [B, 1]
    (consumer,) = x.consumers()
    assert consumer.op_type == "Mul"
    weight = consumer.inputs[1].const_value.numpy()
    assert weight.shape == (1, 64)


def test_split_weights_are_the_original_rows():
    """On a hand-made Loop: y = MatMul(Concat(h, x_t), W) with h carried, x_t = x[t]."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((7, 5)).astype(np.float32)
    model = _concat_loop(w)
    p = SplitConcatMatMulPass()
    ir_model = to_ir(model)
    p(ir_model)
    assert p.summary == "split 1 products of a Concat"
    body = loop_body(ir_model)
    parts = sorted((n.inputs[1].const_value.numpy() for n in body if n.op_type == "MatMul"),
                   key=lambda a: a.shape[0])
    np.testing.assert_array_equal(parts[0], w[4:])  # x_t's 3 rows
    np.testing.assert_array_equal(parts[1], w[:4])  # h's 4 rows
    feed = {"x": rng.standard_normal((6, 2, 3)).astype(np.float32), "h0": np.ones((2, 4), np.float32)}
    result = waveopt.compare_models(model, to_proto(ir_model), feed, atol=1e-5)
    assert result.ok, result.summary()


def _concat_loop(w: np.ndarray) -> onnx.ModelProto:
    body = helper.make_graph(
        [helper.make_node("Gather", ["x", "i"], ["x_t"], axis=0),
         helper.make_node("Concat", ["h", "x_t"], ["hx"], axis=1),
         helper.make_node("MatMul", ["hx", "W"], ["y"]),
         helper.make_node("Slice", ["y", "zero", "four", "one"], ["y4"]),
         helper.make_node("Tanh", ["y4"], ["h_next"]),
         helper.make_node("Identity", ["cond"], ["cond_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, ["B", 4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_next", TensorProto.FLOAT, ["B", 4])])
    graph = helper.make_graph(
        [helper.make_node("Shape", ["x"], ["T1"], start=0, end=1),
         helper.make_node("Squeeze", ["T1"], ["T"]),
         helper.make_node("Loop", ["T", "", "h0"], ["h_last"], body=body)],
        "concat_loop",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "B", 3]),
         helper.make_tensor_value_info("h0", TensorProto.FLOAT, ["B", 4])],
        [helper.make_tensor_value_info("h_last", TensorProto.FLOAT, ["B", 4])],
        initializer=[numpy_helper.from_array(w, "W"),
                     numpy_helper.from_array(np.array([0], np.int64), "zero"),
                     numpy_helper.from_array(np.array([4], np.int64), "four"),
                     numpy_helper.from_array(np.array([1], np.int64), "one")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_not_applicable_outside_loops():
    ir_model = ir.serde.deserialize_model(_main_graph_concat_matmul())
    before = serialized(ir_model)
    p = SplitConcatMatMulPass()
    assert p(ir_model).modified is False
    assert p.summary == "not applicable"
    assert serialized(ir_model) == before


def _main_graph_concat_matmul() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Concat", ["a", "b"], ["ab"], axis=1), helper.make_node("MatMul", ["ab", "W"], ["y"])],
        "main_only",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])],
        initializer=[numpy_helper.from_array(np.ones((4, 5), np.float32), "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
