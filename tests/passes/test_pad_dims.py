"""pad_dims: zero-padded Loop bodies compute what the unpadded graph computes, in ORT."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from foreign_graph_gru import gru_op_loop_inputs, gru_op_loop_model, gru_op_loop_reference
from onnx import TensorProto, helper, numpy_helper
from onnx_builders import ar_loop_model, cnn_model, gru_model

from waveopt.check import compare_models, cpu_session, random_inputs
from waveopt.demo_data import demo_mels, demo_prev_samples, uniform_noise
from waveopt.graph import iter_nodes, loop_nodes, to_ir, to_proto
from waveopt.model_info import example_inputs
from waveopt.passes import LowerGruPass, PadDimsPass
from waveopt.report import graph_stats


def _pad(proto, multiple=16):
    model = to_ir(proto)
    p = PadDimsPass(multiple)
    assert p(model).model is model  # in place
    return to_proto(model), p


def _round_up(n, m):
    return -(-n // m) * m


def _export_macs(hp, multiple, teacher_forced):
    """Per-step MACs of our export's Loop body with every hidden width rounded up to
    ``multiple`` and every matmul input (K) completed to a multiple by its aux/feature
    part; the classes stay as they are unless they only leave the Loop (teacher-forced)."""
    up = (lambda n: _round_up(n, multiple)) if multiple > 1 else (lambda n: n)
    aux = hp.res_out_dims // 4
    rnn, fc = up(hp.rnn_dims), up(hp.fc_dims)
    classes = hp.n_classes if not teacher_forced else up(hp.n_classes)
    gru_in = up(rnn + aux)
    return (up(1 + hp.feat_dims + aux) * rnn  # I
            + rnn * 3 * rnn * 3  # rnn1 (input and recurrent) and rnn2's recurrent Gemm
            + gru_in * 3 * rnn  # rnn2's input Gemm
            + up(rnn + aux) * fc + up(fc + aux) * fc + fc * classes)


# --- our export -------------------------------------------------------------------------------
@pytest.mark.parametrize("name,teacher_forced,multiple", [
    ("odd", False, 16), ("odd", True, 16), ("odd_mol", False, 16), ("odd", False, 32),
    ("raw", True, 32), ("mol", True, 16),
])
def test_padded_export_is_exact(name, teacher_forced, multiple, models, exports):
    hp = models(name).hp
    original = exports(name, teacher_forced=teacher_forced)
    padded, p = _pad(original, multiple)
    onnx.checker.check_model(padded, full_check=True)
    assert p.modified and p.summary.startswith(f"padded Loop loop to multiples of {multiple}: ")
    # The interface keeps its shapes; every node still says which module it computes.
    assert list(padded.graph.input) == list(original.graph.input)
    assert list(padded.graph.output) == list(original.graph.output)
    assert all("waveopt.module" in n.metadata_props for n, _ in iter_nodes(to_ir(padded).graph))

    before, after = graph_stats(original).macs_per_step, graph_stats(padded).macs_per_step
    assert before == _export_macs(hp, 1, teacher_forced)
    assert after == _export_macs(hp, multiple, teacher_forced) > before
    for node in loop_nodes(to_ir(padded).graph):
        for n in node.attributes["body"].as_graph():
            if n.op_type == "Gemm" and n.metadata_props["waveopt.module"] != "fc3":
                assert all(d % multiple == 0 for d in n.inputs[1].const_value.shape)

    inputs = example_inputs(original, frames=3, batch=2, seed=5)
    result = compare_models(original, padded, inputs, atol=1e-4)
    assert result.ok, result.summary()


def test_odd_sizes_pad_to_the_documented_widths(exports):
    _, p = _pad(exports("odd"))
    assert p.summary.startswith("padded Loop loop to multiples of 16: 200->208 (state), 136->144 x2, "
                                "24->31, 24->32 x3; matmul weights per step 706888 -> 769792 (+8.9%)")


def test_is_idempotent(exports):
    padded, _ = _pad(exports("odd"))
    again, p = _pad(padded)
    assert not p.modified
    assert p.summary == "not applicable (hidden widths [144, 208] are multiples of 16 already)"
    assert again.SerializeToString() == padded.SerializeToString()


def test_not_applicable_to_unrelated_models():
    for proto, why in ((cnn_model(), "no Loop"), (gru_model(), "no matmul with a constant weight in a Loop body")):
        before = to_proto(to_ir(proto)).SerializeToString()
        padded, p = _pad(proto)
        assert not p.modified and p.summary == f"not applicable ({why})"
        assert padded.SerializeToString() == before


def test_multiple_must_be_an_integer_above_one():
    for bad in (0, 1, 16.5):
        with pytest.raises(ValueError):
            PadDimsPass(bad)


# --- other graphs: a foreign sampler, the GRU-op loop after lower_gru, hoisted forms -----------
def test_foreign_sampler_loop():
    proto = ar_loop_model(hidden=12, features=3, classes=16)
    padded, p = _pad(proto)
    assert p.summary.startswith("padded Loop body to multiples of 16: 12->16 (state), 3->15;")
    for seed in range(2):
        inputs = random_inputs(proto, seed=seed, dims={"T": 30, "B": 3})
        result = compare_models(proto, padded, inputs)
        assert result.ok, result.summary()


@pytest.mark.parametrize("teacher_forced", [False, True], ids=["free", "teacher_forced"])
def test_gru_op_loop_after_lower_gru(teacher_forced, models):
    model = models("odd")
    proto = gru_op_loop_model(model, teacher_forced=teacher_forced)
    ir_model = to_ir(proto)
    LowerGruPass()(ir_model)
    p = PadDimsPass()
    p(ir_model)
    assert "200->208 (state)" in p.summary
    padded = to_proto(ir_model)
    mels = demo_mels(2, batch=2, seed=7)
    steps = 2 * model.hop_length
    if teacher_forced:
        drive = {"prev_samples": demo_prev_samples(steps, 2, seed=7)}
        inputs = gru_op_loop_inputs(model, mels, **drive)
        (logits,) = cpu_session(padded).run(None, inputs)
        assert np.abs(logits - gru_op_loop_reference(model, mels, **drive)).max() <= 1e-4
    else:
        inputs = gru_op_loop_inputs(model, mels, noise=uniform_noise(steps, 2, seed=7))
    result = compare_models(proto, padded, inputs)
    assert result.ok, result.summary()


def _hoisted_gru_loop(hidden=12, classes=10, seed=0, state_op="gru", projected=False):
    """A GRU loop the way split/hoist passes may leave it: the input projections of all
    steps come precomputed (P [T, B, 3H], sliced per gate), one MatMul per recurrent gate,
    h' = (1 - z)·n + z·h, then a dense layer. Outputs: y [T, B, C] per step, h_last.
    With ``projected`` the model computes P = X·W_in + b_in itself from X [T, B, 7].

    ``state_op="sigmoid"`` makes the state h' = Sigmoid(P_r + h·R_r) instead: its padded
    units would become 0.5, so it must not be padded.
    """
    rng = np.random.default_rng(seed)
    h = hidden
    w = {k: (rng.standard_normal((h, h)) * 0.4).astype(np.float32) for k in ("R_r", "R_z", "R_n")}
    w["b_n"] = (rng.standard_normal(h) * 0.1).astype(np.float32)
    w["V"] = rng.standard_normal((h, classes)).astype(np.float32)
    w["c"] = rng.standard_normal(classes).astype(np.float32)
    bounds = {f"s{i}": np.array([i * h], np.int64) for i in range(4)}
    inits = [numpy_helper.from_array(v, k) for k, v in {**w, **bounds}.items()]
    inits += [numpy_helper.from_array(np.array([1], np.int64), "ax1"),
              numpy_helper.from_array(np.float32(1.0), "one")]
    mm = lambda a, b, out: helper.make_node("MatMul", [a, b], [out])  # noqa: E731
    nodes = [helper.make_node("Gather", ["P", "t"], ["p_t"], axis=0),
             *(helper.make_node("Slice", ["p_t", f"s{i}", f"s{i + 1}", "ax1"], [f"i_{g}"])
               for i, g in enumerate("rzn"))]
    if state_op == "gru":
        nodes += [
            mm("h", "R_r", "h_r"), mm("h", "R_z", "h_z"), mm("h", "R_n", "h_n0"),
            helper.make_node("Add", ["h_n0", "b_n"], ["h_n"]),
            helper.make_node("Add", ["i_r", "h_r"], ["r_pre"]), helper.make_node("Sigmoid", ["r_pre"], ["r"]),
            helper.make_node("Add", ["i_z", "h_z"], ["z_pre"]), helper.make_node("Sigmoid", ["z_pre"], ["z"]),
            helper.make_node("Mul", ["r", "h_n"], ["rh"]), helper.make_node("Add", ["i_n", "rh"], ["n_pre"]),
            helper.make_node("Tanh", ["n_pre"], ["n"]),
            helper.make_node("Sub", ["one", "z"], ["one_minus_z"]),
            helper.make_node("Mul", ["one_minus_z", "n"], ["keep_n"]),
            helper.make_node("Mul", ["z", "h"], ["keep_h"]),
            helper.make_node("Add", ["keep_n", "keep_h"], ["h_next"]),
        ]
    else:
        nodes += [mm("h", "R_r", "h_r"), helper.make_node("Add", ["i_r", "h_r"], ["pre"]),
                  helper.make_node("Sigmoid", ["pre"], ["h_next"])]
    nodes += [mm("h_next", "V", "y0"), helper.make_node("Add", ["y0", "c"], ["y1"]),
              helper.make_node("Relu", ["y1"], ["y"]), helper.make_node("Identity", ["cond_in"], ["cond_out"])]
    f = TensorProto.FLOAT
    body = helper.make_graph(
        nodes, "step",
        [helper.make_tensor_value_info("t", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h", f, ["B", h])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_next", f, ["B", h]),
         helper.make_tensor_value_info("y", f, ["B", classes])],
    )
    main = [helper.make_node("Shape", ["X" if projected else "P"], ["T1"], start=0, end=1),
            helper.make_node("Squeeze", ["T1"], ["T"]),
            helper.make_node("Loop", ["T", "", "h0"], ["h_last", "ys"], body=body)]
    first_input = helper.make_tensor_value_info("P", f, ["T", "B", 3 * h])
    if projected:
        inits += [numpy_helper.from_array(rng.standard_normal((7, 3 * h)).astype(np.float32), "W_in"),
                  numpy_helper.from_array(rng.standard_normal(3 * h).astype(np.float32), "b_in")]
        main = [helper.make_node("MatMul", ["X", "W_in"], ["XW"]), helper.make_node("Add", ["XW", "b_in"], ["P"]),
                *main]
        first_input = helper.make_tensor_value_info("X", f, ["T", "B", 7])
    graph = helper.make_graph(
        main, "hoisted_gru", [first_input, helper.make_tensor_value_info("h0", f, ["B", h])],
        [helper.make_tensor_value_info("ys", f, ["T", "B", classes]),
         helper.make_tensor_value_info("h_last", f, ["B", h])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


@pytest.mark.parametrize("projected", [False, True], ids=["P_input", "P_computed"])
def test_hoisted_per_gate_gru_loop(projected):
    proto = _hoisted_gru_loop(projected=projected)
    padded, p = _pad(proto)
    onnx.checker.check_model(padded, full_check=True)
    assert p.summary.startswith("padded Loop body to multiples of 16: 12->16 (state), 10->16;")
    assert list(padded.graph.output) == list(proto.graph.output)
    stats = graph_stats(padded)
    assert stats.macs_per_step == 3 * 16 * 16 + 16 * 16  # three gates, then the dense layer
    # Padded once, before the Loop: h0, and P's three gate blocks unless P = X·W_in + b_in,
    # whose W_in and b_in get the zero columns instead.
    assert stats.ops_outside_loop.get("Pad", 0) == (1 if projected else 4)
    assert "Pad" not in stats.ops_in_loop_body  # nothing is padded per step
    inputs = random_inputs(proto, seed=3, dims={"T": 25, "B": 3})
    result = compare_models(proto, padded, inputs, atol=1e-5)
    assert result.ok, result.summary()


def test_state_whose_padding_would_not_stay_zero_is_not_padded():
    proto = _hoisted_gru_loop(classes=16, state_op="sigmoid")
    before = to_proto(to_ir(proto)).SerializeToString()
    padded, p = _pad(proto)
    assert not p.modified
    assert p.summary == ("not applicable (hidden widths [16] are multiples of 16 already; "
                         "not padded (a carried state would not stay 0 in its padded units: 12))")
    assert padded.SerializeToString() == before
