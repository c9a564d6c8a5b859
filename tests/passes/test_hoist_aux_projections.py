"""hoist_aux_projections: what a Loop body computes from the step index alone moves out."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_builders import ar_loop_model

import waveopt
from loop_pass_cases import (
    CASE_IDS, CASES, assert_exact, body_ops, expected_macs, loop_body, optimized, reads_state, serialized, upto,
)
from waveopt.graph import to_ir, to_proto
from waveopt.passes import HoistAuxProjectionsPass

HOIST = upto("hoist_aux_projections")  # split, hoist


@pytest.mark.parametrize(("source", "form"), CASES, ids=CASE_IDS)
def test_hoists_aux_projections_and_is_exact(source, form):
    result = optimized(source, form, HOIST)
    assert result.reports[-1].modified
    body = loop_body(result.model)
    for node in body:  # every product left in the body reads the loop state
        if node.op_type in ("MatMul", "Gemm"):
            assert reads_state(node.inputs[0], body), node.name
    # What remains: the final layers, plus (free-running) rnn1's input projection of I,
    # which reads the fed-back sample until fold_linear composes it.
    macs = expected_macs(source, form, "final")
    if form != "tf":
        rnn = 40 if source == "ts" else {"raw": 64, "mol": 64, "odd": 200, "odd_mol": 200}[source]
        macs += rnn * 3 * rnn
    assert waveopt.graph_stats(result.model).macs_per_step == macs
    assert_exact(source, form, result.model)


def test_mol_noise_transform_leaves_the_loop():
    """log(u1) - log(1 - u1) depends on the noise row alone."""
    before = body_ops(optimized("mol", "free", ()).model)
    after = optimized("mol", "free", ("hoist_aux_projections",))
    assert before["Log"] == 2 and "Log" not in body_ops(after.model)
    assert_exact("mol", "free", after.model)


def _loop(body_nodes, outer_nodes=(), inits=(), cond_from_state=False, extra_inputs=()):
    """A Loop over T = len(a) steps carrying s [B, 4]; body nodes compute s_next."""
    body_nodes = list(body_nodes)
    if cond_from_state:  # go on while the state stays below 1e6: an early exit the pass cannot see through
        body_nodes += [helper.make_node("ReduceMax", ["s_next"], ["smax"], keepdims=0),
                       helper.make_node("Less", ["smax", "big"], ["cond_out"])]
    else:
        body_nodes.append(helper.make_node("Identity", ["cond"], ["cond_out"]))
    body = helper.make_graph(
        body_nodes, "body",
        [helper.make_tensor_value_info("t", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, ["B", 4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("s_next", TensorProto.FLOAT, ["B", 4])])
    rng = np.random.default_rng(1)
    inits = [*inits,
             numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal((2, 4)).astype(np.float32), "V"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "c"),
             numpy_helper.from_array(np.array(1e6, np.float32), "big"),
             numpy_helper.from_array(np.array(True), "true")]
    graph = helper.make_graph(
        [*outer_nodes,
         helper.make_node("Shape", ["a"], ["T1"], start=0, end=1),
         helper.make_node("Squeeze", ["T1"], ["T"]),
         helper.make_node("Loop", ["T", "true", "s0"], ["s_last"], body=body)],
        "hoist_case",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["T", "B", 3]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["T2", "B", 2]),
         helper.make_tensor_value_info("s0", TensorProto.FLOAT, ["B", 4]), *extra_inputs],
        [helper.make_tensor_value_info("s_last", TensorProto.FLOAT, ["B", 4])],
        initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _feed(steps=6, extra=0, seed=0):
    rng = np.random.default_rng(seed)
    return {"a": rng.standard_normal((steps, 2, 3)).astype(np.float32),
            "b": rng.standard_normal((steps + extra, 2, 2)).astype(np.float32),
            "s0": rng.standard_normal((2, 4)).astype(np.float32)}


# s_next = tanh(s + a_t·W + b_t·V): the two projections come from tensors of unequal length.
_CROSS = [helper.make_node("Gather", ["a", "t"], ["a_t"], axis=0),
          helper.make_node("Gather", ["b", "t"], ["b_t"], axis=0),
          helper.make_node("MatMul", ["a_t", "W"], ["pa"]),
          helper.make_node("MatMul", ["b_t", "V"], ["pb"]),
          helper.make_node("Add", ["pa", "pb"], ["p"]),
          helper.make_node("Add", ["s", "p"], ["pre"]),
          helper.make_node("Tanh", ["pre"], ["s_next"])]


def _run_pass(model):
    ir_model = to_ir(model)
    p = HoistAuxProjectionsPass()
    p(ir_model)
    return to_proto(ir_model), p


def test_rows_of_tensors_of_unequal_length_are_cut_to_the_trip_count():
    """b has 3 rows more than the Loop runs: its hoisted projection is cut to T rows."""
    model = _loop(_CROSS)
    hoisted, p = _run_pass(model)
    assert p.summary.startswith("hoisted 1 values")
    assert body_ops(hoisted) == {"Add": 1, "Gather": 1, "Identity": 1, "Tanh": 1}
    assert "Slice" in waveopt.graph_stats(hoisted).ops_outside_loop
    for extra in (0, 3):
        result = waveopt.compare_models(model, hoisted, _feed(extra=extra), atol=1e-6)
        assert result.ok, result.summary()


def test_with_an_early_exit_rows_of_different_tensors_are_not_combined():
    """With a data-dependent condition the trip count only bounds the steps: a_t·W and
    b_t·V are each hoisted, their sum stays in the body."""
    model = _loop(_CROSS, cond_from_state=True)
    hoisted, p = _run_pass(model)
    assert p.summary.startswith("hoisted 2 values")
    assert "MatMul" not in body_ops(hoisted) and body_ops(hoisted)["Add"] == 2
    for extra in (0, 3):
        result = waveopt.compare_models(model, hoisted, _feed(extra=extra), atol=1e-6)
        assert result.ok, result.summary()


def test_loop_invariant_values_are_computed_once():
    """tanh(2·c) reads only outer tensors: it moves out of the body."""
    nodes = [helper.make_node("Constant", [], ["two"], value=numpy_helper.from_array(np.array(2.0, np.float32))),
             helper.make_node("Mul", ["c", "two"], ["c2"]),
             helper.make_node("Tanh", ["c2"], ["tc"]),
             helper.make_node("Add", ["s", "tc"], ["s_next"])]
    model = _loop(nodes)
    hoisted, p = _run_pass(model)
    assert p.summary.startswith("hoisted 1 values")
    assert body_ops(hoisted) == {"Add": 1, "Identity": 1}  # the Constant went with the Mul
    result = waveopt.compare_models(model, hoisted, _feed(), atol=0.0)
    assert result.ok, result.summary()


def test_a_time_axis_after_the_batch_axis():
    """Gather(x, t, axis=1) of x [B, T, 3], then Unsqueeze/Slice/MatMul: hoisted with time at axis 1."""
    nodes = [helper.make_node("Gather", ["x", "t"], ["x_t"], axis=1),
             helper.make_node("Unsqueeze", ["x_t", "ax1"], ["x_u"]),           # [B, 1, 3]
             helper.make_node("Slice", ["x_u", "zero", "two", "ax2"], ["x_s"]),  # [B, 1, 2]
             helper.make_node("Squeeze", ["x_s", "ax1"], ["x_q"]),             # [B, 2]
             helper.make_node("MatMul", ["x_q", "V"], ["p"]),
             helper.make_node("Add", ["s", "p"], ["s_next"])]
    ints = [numpy_helper.from_array(np.array([v], np.int64), n) for n, v in (("ax1", 1), ("ax2", 2),
                                                                            ("zero", 0), ("two", 2))]
    model = _loop(nodes, inits=ints, extra_inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                 ["B", "T", 3])])
    hoisted, p = _run_pass(model)
    assert p.summary.startswith("hoisted 1 values")
    assert body_ops(hoisted) == {"Add": 1, "Gather": 1, "Identity": 1}
    feed = {**_feed(), "x": np.random.default_rng(3).standard_normal((2, 6, 3)).astype(np.float32)}
    result = waveopt.compare_models(model, hoisted, feed, atol=1e-6)
    assert result.ok, result.summary()


def test_not_applicable_without_arithmetic():
    """The tiny sampler's body only gathers rows (no arithmetic to hoist)."""
    ir_model = ir.serde.deserialize_model(ar_loop_model(redundant=False))
    before = serialized(ir_model)
    p = HoistAuxProjectionsPass()
    assert p(ir_model).modified is False
    assert p.summary == "not applicable"
    assert serialized(ir_model) == before
