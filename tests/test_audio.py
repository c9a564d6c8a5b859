"""Audio files -> fatchord's mels, against an independent numpy analysis."""

from __future__ import annotations

import json

import librosa
import numpy as np
import onnx
import pytest
import soundfile
from onnx import helper

from waveopt.audio import FATCHORD, MelAnalysis, check_mel_scale, load_audio, mel_from_audio, mels_from_file
from waveopt.errors import WaveoptError


def chirp(sample_rate: int, seconds: float = 0.5, noise: float = 0.0) -> np.ndarray:
    """A 200 Hz -> 4 kHz linear chirp at amplitude 0.5 (band-limited below 8 kHz), plus white noise."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0, f1 = 200.0, 4000.0
    y = 0.5 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) / (2 * seconds) * t * t))
    y += noise * np.random.default_rng(0).standard_normal(t.size)
    return y.astype(np.float32)


def reference_mels(y: np.ndarray, a: MelAnalysis = FATCHORD) -> np.ndarray:
    """fatchord's analysis written out with numpy: reflect-padded centred frames, periodic Hann of
    win_length centred in n_fft, |rfft|, Slaney mel matrix, 20·log10(max(1e-5, ·)), [0, 1]."""
    y = np.pad(y.astype(np.float64), a.n_fft // 2, mode="reflect")
    n = np.arange(a.win_length)
    window = np.zeros(a.n_fft)
    start = (a.n_fft - a.win_length) // 2
    window[start:start + a.win_length] = 0.5 - 0.5 * np.cos(2 * np.pi * n / a.win_length)
    frames = 1 + (y.size - a.n_fft) // a.hop_length
    stack = np.stack([y[i * a.hop_length: i * a.hop_length + a.n_fft] * window for i in range(frames)], axis=1)
    magnitude = np.abs(np.fft.rfft(stack, axis=0))
    basis = librosa.filters.mel(sr=a.sample_rate, n_fft=a.n_fft, n_mels=a.n_mels, fmin=a.fmin)
    db = 20 * np.log10(np.maximum(1e-5, basis @ magnitude))
    return np.clip((db - a.min_level_db) / -a.min_level_db, 0, 1)


def write(path, data, rate):
    soundfile.write(str(path), data, rate, subtype="FLOAT")
    return path


def test_mels_match_the_numpy_reference(tmp_path):
    y = chirp(22050, noise=0.01)
    mels = mels_from_file(write(tmp_path / "a.wav", y, 22050))
    assert mels.dtype == np.float32 and mels.shape == (80, 1 + y.size // 275)
    assert 0.0 <= mels.min() and mels.max() <= 1.0
    np.testing.assert_allclose(mels, reference_mels(y), atol=1e-5)
    assert mels.max() - mels.min() > 0.3 and (mels < 1).mean() > 0.5  # a real spectrogram, not a constant


def test_stereo_is_mixed_to_mono(tmp_path):
    y = chirp(22050, noise=0.01)
    stereo = np.stack([y, 0.5 * y], axis=1)
    np.testing.assert_allclose(load_audio(write(tmp_path / "s.wav", stereo, 22050), 22050), 0.75 * y, atol=1e-7)
    np.testing.assert_allclose(mels_from_file(tmp_path / "s.wav"), reference_mels(0.75 * y), atol=1e-5)


def test_flac_is_read(tmp_path):
    y = chirp(22050)
    path = tmp_path / "a.flac"
    soundfile.write(str(path), y, 22050, subtype="PCM_24")
    np.testing.assert_allclose(load_audio(path, 22050), y, atol=2e-7)


@pytest.mark.parametrize("rate", [16000, 44100])
def test_other_rates_are_resampled(rate, tmp_path):
    """The chirp recorded at another rate gives the mels of the chirp synthesised at 22,050 Hz."""
    y = load_audio(write(tmp_path / f"{rate}.wav", chirp(rate), rate), 22050)
    assert y.dtype == np.float32 and abs(y.size - chirp(22050).size) <= 1
    mels = mel_from_audio(y)
    expected = reference_mels(chirp(22050))
    assert mels.shape[1] == 1 + y.size // 275
    frames = min(mels.shape[1], expected.shape[1])
    inner = slice(2, frames - 2)  # the edges see the resampler's filter start-up
    strong = expected[:, inner] > 0.6  # bands the chirp puts energy in
    assert strong.sum() > 100
    assert np.abs(mels[:, inner][strong] - expected[:, inner][strong]).max() < 0.01
    np.testing.assert_array_equal(mels[:, inner].argmax(axis=0), expected[:, inner].argmax(axis=0))


def test_analysis_follows_the_model_metadata():
    hparams = {"mode": "raw", "bits": 9, "rnn_dims": 32, "fc_dims": 32, "feat_dims": 40, "compute_dims": 16,
               "res_out_dims": 16, "res_blocks": 1, "pad": 1, "upsample_factors": [4, 8], "sample_rate": 16000,
               "mu_law": True}
    model = helper.make_model(helper.make_graph([], "g", [], []))
    helper.set_model_props(model, {"waveopt.kind": "wavernn", "waveopt.mode": "raw", "waveopt.form": "free_running",
                                   "waveopt.hparams": json.dumps(hparams)})
    analysis = MelAnalysis.for_model(model)
    assert (analysis.sample_rate, analysis.hop_length, analysis.n_mels) == (16000, 32, 40)
    assert (analysis.n_fft, analysis.win_length, analysis.fmin) == (2048, 1100, 40.0)
    mels = mel_from_audio(chirp(16000), analysis)
    assert mels.shape == (40, 1 + 8000 // 32)


def test_a_foreign_model_has_no_analysis():
    with pytest.raises(WaveoptError, match="no waveopt WaveRNN metadata"):
        MelAnalysis.for_model(onnx.ModelProto())


def test_missing_file(tmp_path):
    with pytest.raises(WaveoptError, match="no such file"):
        load_audio(tmp_path / "missing.wav", 22050)


def test_not_audio(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("not audio at all\n")
    with pytest.raises(WaveoptError, match="notes.wav is not a readable audio file") as e:
        load_audio(path, 22050)
    assert "\n" not in str(e.value)


def test_empty_file(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(WaveoptError, match="empty.wav is not a readable audio file"):
        load_audio(tmp_path / "empty.wav", 22050)


def test_wav_without_samples(tmp_path):
    path = write(tmp_path / "none.wav", np.zeros(0, np.float32), 22050)
    with pytest.raises(WaveoptError, match="none.wav holds no audio samples"):
        load_audio(path, 22050)


def test_too_short_for_one_frame():
    with pytest.raises(WaveoptError, match="audio too short: 1000 samples"):
        mel_from_audio(np.zeros(1000, np.float32))


def test_directory(tmp_path):
    with pytest.raises(WaveoptError, match="is a directory"):
        load_audio(tmp_path, 22050)


def test_mel_scale_check():
    assert check_mel_scale(np.linspace(0, 1, 80 * 5).reshape(80, 5)) is None
    raw_db = 20 * np.log10(np.full((80, 5), 0.01))
    warning = check_mel_scale(raw_db)
    assert warning and "-40" in warning and "[0, 1]" in warning
    assert check_mel_scale(np.full((80, 5), 1.5)) is not None
    assert check_mel_scale(np.full((80, 5), np.nan)) is not None
