"""Quantization end to end: calibration, the native int8/int16 loop against float32, the guard.

References: the float32 model in ORT (the same graph before quantization, through its
teacher-forced twin) for every accuracy number; the float32 run's ReLU outputs measured in
numpy from the torch weights for the calibrated ranges.
"""

from __future__ import annotations

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, cli

from waveopt.demo_data import demo_mels
from waveopt.errors import WaveoptError
from waveopt.model_info import wavernn_info
from waveopt.pipeline import optimize
from waveopt.quant.guard import DEFAULT_MIN_SNR_DB, calibrate_ranges, quantize_checked

# Floors with margin under what these small models measure (see the README's table for the
# fatchord-size demo model): int16 is near float32, int8 keeps the argmax class (RAW) and
# most sampled values within 1/128 (MOL: the logistic sample amplifies small errors).
FLOOR = {("native", 16): (55.0, 0.99, 0.98), ("native", 8): (28.0, 0.92, 0.85),
         ("portable", 8): (28.0, 0.92, 0.85)}
MELS = [demo_mels(6, feat_dims=80, seed=3)]


@pytest.fixture(scope="module")
def optimized(exports):
    cache = {}

    def get(name, target):
        if (name, target) not in cache:
            cache[(name, target)] = optimize(exports(name), preset=target).model
        return cache[(name, target)]
    return get


@pytest.mark.parametrize("name", ["raw", "mol", "odd"])
@pytest.mark.parametrize("target, bits", [("native", 16), ("native", 8), ("portable", 8)])
def test_quantized_within_documented_snr(optimized, name, target, bits):
    model, accuracy, report = quantize_checked(optimized(name, target), bits, MELS)
    snr_floor, raw_floor, mol_floor = FLOOR[(target, bits)]
    agree_floor = mol_floor if accuracy.mode == "mol" else raw_floor
    assert accuracy.logit_snr_db >= snr_floor, accuracy.lines()
    assert accuracy.agreement >= agree_floor, accuracy.lines()
    assert np.isfinite(accuracy.log_mel_db) and accuracy.log_mel_db >= 0
    assert report.modified
    if target == "native":
        loop = next(n for n in model.graph.node if n.op_type == "WaveRNNLoop")
        attrs = {a.name: a for a in loop.attribute}
        assert attrs["quant"].s == f"int{bits}".encode()
        assert list(attrs["act_ranges"].floats) == pytest.approx(accuracy.act_ranges)


def test_fatchord_size_model_within_documented_snr(optimized):
    """The default model (rnn 512, fc 512, 9 bits): the sizes the README's table is about."""
    model = optimized("fatchord", "native")
    mels = [demo_mels(4, seed=3)]
    snr = {}
    for bits in (8, 16):
        _, accuracy, _ = quantize_checked(model, bits, mels)
        snr_floor, raw_floor, _ = FLOOR[("native", bits)]
        assert accuracy.logit_snr_db >= snr_floor and accuracy.agreement >= raw_floor, accuracy.lines()
        snr[bits] = accuracy.logit_snr_db
    assert snr[16] > snr[8] + 20, snr


def test_int16_is_closer_to_float32_than_int8(optimized):
    snr = {bits: quantize_checked(optimized("raw", "native"), bits, MELS)[1].logit_snr_db for bits in (8, 16)}
    assert snr[16] > snr[8] + 15, snr


def test_calibrated_ranges_are_the_float32_relu_peaks(optimized, models):
    """The op's statistics equal the ReLU peaks of the float32 loop recomputed in numpy."""
    from native_emulation import relu_peaks

    model = optimized("raw", "native")
    ranges = calibrate_ranges(model, MELS)
    expected = relu_peaks(model, MELS[0])
    assert ranges == pytest.approx(expected, rel=1e-4)


def test_guard_refuses_a_badly_calibrated_model(optimized, tmp_path):
    """Ranges 100x too small clip relu(fc1)/relu(fc2): the SNR collapses and nothing is written."""
    model = optimized("raw", "native")
    good = calibrate_ranges(model, MELS)
    _, bad, _ = quantize_checked(model, 8, MELS, act_ranges=[r / 100 for r in good])
    assert bad.logit_snr_db < DEFAULT_MIN_SNR_DB, bad.lines()


def test_optimize_refuses_a_badly_calibrated_model(capsys, exports, tmp_path, monkeypatch):
    """The CLI end to end with a calibration that clips (ranges 100x too small): refused at
    the default --min-snr, nothing written."""
    import waveopt.quant.guard as quantizing

    real = quantizing.calibrate_ranges
    monkeypatch.setattr(quantizing, "calibrate_ranges", lambda *a, **k: [r / 100 for r in real(*a, **k)])
    source = tmp_path / "raw.onnx"
    source.write_bytes(exports("raw").SerializeToString())
    out = tmp_path / "bad.onnx"
    code, _, err = cli(capsys, "optimize", source, "-o", out, "--target", "native", "--quant", "int8")
    assert_one_line_error(code, err, "not written", f"under --min-snr {DEFAULT_MIN_SNR_DB:g} dB")
    assert not out.exists()


def test_optimize_refuses_under_min_snr_unless_forced(capsys, exports, tmp_path):
    source = tmp_path / "raw.onnx"
    source.write_bytes(exports("raw").SerializeToString())
    before = source.read_bytes()
    out = tmp_path / "q.onnx"
    code, _, err = cli(capsys, "optimize", source, "-o", out, "--target", "native", "--quant", "int8",
                       "--min-snr", "200")
    assert_one_line_error(code, err, "not written", "under --min-snr 200")
    assert not out.exists() and source.read_bytes() == before
    code, text, err = cli(capsys, "optimize", source, "-o", out, "--target", "native", "--quant", "int8",
                          "--min-snr", "200", "--force")
    assert code == 0, err
    assert out.exists() and "written anyway (--force)" in text and "logit SNR" in text


def test_calibration_with_user_mel_files(capsys, exports, tmp_path):
    source = tmp_path / "raw.onnx"
    source.write_bytes(exports("raw").SerializeToString())
    files = []
    for i, frames in enumerate((3, 5)):
        files.append(tmp_path / f"m{i}.npy")
        np.save(files[-1], demo_mels(frames, seed=10 + i)[0])
    out = tmp_path / "q16.onnx"
    code, text, err = cli(capsys, "optimize", source, "-o", out, "--target", "native", "--quant", "int16",
                          "--calibrate", *files)
    assert code == 0, err
    assert "int16 vs float32 on the calibration mels" in text and out.exists()
    steps = int(text.split("calibration mels (")[1].split(" steps")[0])
    hop = wavernn_info(exports("raw")).hop_length
    assert steps == (3 + 5) * hop  # both files, and only them


@pytest.mark.parametrize("args, needle", [
    (["--quant", "int4"], "--quant must be none, int8 or int16"),
    (["--calibrate", "x.npy"], "--calibrate is for quantization"),
    (["--quant", "int16"], "--quant int16 needs --target native"),
    (["--quant", "int8", "--min-snr", "nan"], "--min-snr must be a finite number"),
    (["--quant", "int8", "--calibrate", "missing.npy"], "no such mel file"),
    (["--passes", "simplify,quantize"], "runs through --quant"),
])
def test_quant_bad_input(capsys, exports, tmp_path, args, needle):
    source = tmp_path / "raw.onnx"
    source.write_bytes(exports("raw").SerializeToString())
    code, _, err = cli(capsys, "optimize", source, "-o", tmp_path / "out.onnx", *args)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "out.onnx").exists()


def test_quantize_checked_refuses_foreign_and_teacher_forced(exports):
    from onnx_builders import cnn_model

    with pytest.raises(WaveoptError, match="waveopt-exported WaveRNN"):
        quantize_checked(cnn_model(), 8)
    with pytest.raises(WaveoptError, match="free-running"):
        quantize_checked(exports("raw", teacher_forced=True), 8)
