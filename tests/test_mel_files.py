"""Mel files as users give them (issue 13, bugs 4 and 7): .npy or .npz, to vocode and to
``optimize --calibrate``; every refusal one line naming the file and the shape as stored."""

from __future__ import annotations

import wave

import numpy as np
import onnx
import pytest

from cli_helpers import assert_one_line_error, cli
from onnx_builders import cnn_model
from waveopt.demo_data import demo_mels


@pytest.fixture(scope="module")
def files(tmp_path_factory, exports):
    """The small RAW export, a non-WaveRNN model and a teacher-forced export, as files."""
    folder = tmp_path_factory.mktemp("mel_files")
    onnx.save(exports("raw"), folder / "small.onnx")
    onnx.save(cnn_model(), folder / "resnet.onnx")
    onnx.save(exports("raw", teacher_forced=True), folder / "tf.onnx")
    return folder


def _wav_samples(path):
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def test_vocode_reads_npz_with_one_array_or_a_mels_key(capsys, files):
    mels = demo_mels(3)[0]  # [80, 3]
    np.save(files / "m.npy", mels)
    np.savez(files / "one.npz", mels)  # stored as arr_0
    np.savez(files / "keyed.npz", mels=mels, text_ids=np.arange(5))
    waves = {}
    for name in ("m.npy", "one.npz", "keyed.npz"):
        out = files / f"{name}.wav"
        code, _, err = cli(capsys, "vocode", files / "small.onnx", files / name, "-o", out)
        assert code == 0, err
        waves[name] = _wav_samples(out)
    assert len(waves["m.npy"]) == 2 * 275
    np.testing.assert_array_equal(waves["one.npz"], waves["m.npy"])
    np.testing.assert_array_equal(waves["keyed.npz"], waves["m.npy"])


def test_npz_without_a_clear_mel_array_is_one_line(capsys, files):
    np.savez(files / "two.npz", a=demo_mels(3)[0], b=demo_mels(3)[0])
    np.savez(files / "empty.npz")
    for name in ("two.npz", "empty.npz"):
        code, _, err = cli(capsys, "vocode", files / "small.onnx", files / name, "-o", files / "never.wav")
        assert_one_line_error(code, err, name, "'mels'")
    assert not (files / "never.wav").exists()


def test_shape_error_reports_the_shape_as_stored(capsys, files):
    np.save(files / "wrong_feat.npy", np.zeros((40, 100), np.float32))
    code, _, err = cli(capsys, "vocode", files / "small.onnx", files / "wrong_feat.npy", "-o", files / "never.wav")
    assert_one_line_error(code, err, "wrong_feat.npy", "shape [40, 100]", "[80, frames]")
    assert "[1, 40, 100]" not in err
    np.save(files / "one_frame.npy", np.zeros((80, 1), np.float32))
    code, _, err = cli(capsys, "vocode", files / "small.onnx", files / "one_frame.npy", "-o", files / "never.wav")
    assert_one_line_error(code, err, "shape [80, 1]", "at least 2")


def test_vocode_names_a_model_that_is_not_a_wavernn(capsys, files):
    np.save(files / "ok.npy", demo_mels(3)[0])
    code, _, err = cli(capsys, "vocode", files / "resnet.onnx", files / "ok.npy", "-o", files / "never.wav")
    assert_one_line_error(code, err, "resnet.onnx", "not a WaveRNN")
    assert "teacher-forced" not in err
    code, _, err = cli(capsys, "vocode", files / "tf.onnx", files / "ok.npy", "-o", files / "never.wav")
    assert_one_line_error(code, err, "tf.onnx", "teacher-forced")


def test_optimize_calibrates_on_npz(capsys, files):
    np.savez(files / "calib.npz", mels=demo_mels(3, seed=4)[0])
    out = files / "small.int8.onnx"
    code, stdout, err = cli(capsys, "optimize", files / "small.onnx", "-o", out, "--quant", "int8",
                            "--calibrate", files / "calib.npz", "--force")
    assert code == 0, err
    assert out.is_file()
    np.savez(files / "calib_two.npz", a=demo_mels(3)[0], b=demo_mels(3)[0])
    code, _, err = cli(capsys, "optimize", files / "small.onnx", "-o", files / "never.onnx", "--quant", "int8",
                       "--calibrate", files / "calib_two.npz")
    assert_one_line_error(code, err, "calib_two.npz")
    assert not (files / "never.onnx").exists()
