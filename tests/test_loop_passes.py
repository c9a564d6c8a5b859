"""The loop passes together: the fixed point, the per-step MACs of the fatchord-size model,
and WaveRNN graphs with ONNX GRU ops (after lower_gru)."""

from __future__ import annotations

import pytest

import waveopt
from foreign_graph_gru import gru_op_loop_inputs, gru_op_loop_model, gru_op_wavernn
from loop_pass_cases import LOOP_PASSES, TIE_EPS, assert_exact, optimized, serialized
from waveopt.demo_data import demo_mels, demo_prev_samples, uniform_noise
from waveopt.model_info import example_inputs

FATCHORD_RAW_MACS = 4_071_936  # I + rnn1 + rnn2 + fc1 + fc2 + fc3 per step, as exported
TARGET_MACS = 3_150_000


@pytest.fixture(scope="module")
def fatchord_raw(exports):
    """The fatchord-size demo model (RAW), the session's export (model_fixtures)."""
    return exports("fatchord")


def test_fatchord_size_per_step_macs(fatchord_raw):
    result = waveopt.optimize(fatchord_raw, passes=LOOP_PASSES)
    assert waveopt.graph_stats(fatchord_raw).macs_per_step == FATCHORD_RAW_MACS
    # Left: W_hh1·h1, W_ih2·h1, W_hh2·h2 (3 x 512x1536), fc1·(h1+h2), fc2, fc3 (3 x 512x512).
    macs = waveopt.graph_stats(result.model).macs_per_step
    assert macs <= TARGET_MACS
    assert macs == 3 * 512 * 1536 + 3 * 512 * 512
    inputs = example_inputs(fatchord_raw, frames=3, batch=1, seed=2)
    check = waveopt.compare_models(fatchord_raw, result.model, inputs)
    assert check.ok, check.summary()


@pytest.mark.parametrize(("source", "form"), [("raw", "free"), ("mol", "tf"), ("ts", "free")],
                         ids=["raw-free", "mol-tf", "ts-free"])
def test_the_sequence_reaches_its_fixed_point(source, form):
    once = optimized(source, form, tuple(LOOP_PASSES))
    assert all(r.modified for r in once.reports)
    again = waveopt.optimize(once.model, passes=LOOP_PASSES)
    assert [r.summary for r in again.reports] == ["not applicable"] * len(LOOP_PASSES)
    assert serialized(again.model) == serialized(once.model)


def test_after_simplify_the_sequence_still_applies_and_is_exact():
    """The proposed "portable" preset: simplify first (onnxsim cannot run after hoisting,
    see the report), then the loop passes."""
    result = optimized("raw", "free", ("simplify", *LOOP_PASSES))
    assert all(r.modified for r in result.reports)
    assert waveopt.graph_stats(result.model).macs_per_step == 3 * 64 * 192 + 64 * 48 + 48 * 48 + 48 * 512
    assert_exact("raw", "free", result.model)


@pytest.mark.parametrize("dense", ["matmul", "gemm"])
@pytest.mark.parametrize("teacher_forced", [False, True], ids=["free", "tf"])
def test_onnx_gru_op_loops_after_lower_gru(dense, teacher_forced):
    """(b): a body with ONNX GRU ops, lowered by lower_gru, then the loop passes."""
    wavernn = gru_op_wavernn(None, "raw")
    model = gru_op_loop_model(wavernn, teacher_forced=teacher_forced, dense=dense)
    result = waveopt.optimize(model, passes=["lower_gru", *LOOP_PASSES])
    assert all(r.modified for r in result.reports)
    hp = wavernn.hp
    rnn, fc = hp.rnn_dims, hp.fc_dims
    assert waveopt.graph_stats(result.model).macs_per_step == 3 * rnn * 3 * rnn + rnn * fc + fc * fc + fc * hp.n_classes
    frames = 2000 // wavernn.hop_length + 1 if not teacher_forced else 20
    mels = demo_mels(frames, batch=2, feat_dims=hp.feat_dims, seed=8)
    steps = frames * wavernn.hop_length
    if teacher_forced:
        inputs = gru_op_loop_inputs(wavernn, mels, prev_samples=demo_prev_samples(steps, 2, seed=8))
    else:
        inputs = gru_op_loop_inputs(wavernn, mels, noise=uniform_noise(steps, 2, seed=8))
    for eps in TIE_EPS:
        check = waveopt.compare_models(model, result.model, inputs, tie_eps=eps)
        if check.ok or "noise nudge" not in check.summary():
            break
    assert check.ok, check.summary()
