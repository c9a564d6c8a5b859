"""Copy-synthesis and pictures through the CLI (issue 13): ``waveopt mels``, ``vocode`` from a
WAV/FLAC, the mel-scale warning, ``vocode --plot`` and ``bench --plot``; files in a temp dir."""

from __future__ import annotations

import json
import wave

import numpy as np
import onnx
import pytest
import soundfile

from cli_helpers import assert_one_line_error, cli
from waveopt.audio import FATCHORD, MelAnalysis, mels_from_file
from waveopt.demo_data import demo_mels
from waveopt.model_info import wavernn_info

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("cli_audio")


@pytest.fixture(scope="module")
def speech(workdir):
    """0.3 s of a voiced-like sound, stereo at 16 kHz (so reading averages channels and resamples)."""
    rate = 16000
    t = np.arange(int(0.3 * rate)) / rate
    f0 = 120 + 40 * t
    mono = sum(0.2 / k * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 12)) * np.hanning(t.size)
    path = workdir / "speech.wav"
    soundfile.write(path, np.stack([mono, 0.5 * mono], axis=1).astype(np.float32), rate)
    return path


def read_wav(path):
    with wave.open(str(path)) as w:
        return w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def test_mels_command_writes_fatchords_mels(capsys, workdir, speech):
    out = workdir / "mels.npy"
    code, stdout, err = cli(capsys, "mels", speech, "-o", out)
    assert code == 0, err
    mels = np.load(out)
    samples = int(round(0.3 * 16000 * FATCHORD.sample_rate / 16000))
    assert mels.dtype == np.float32 and mels.shape == (80, 1 + samples // 275)
    np.testing.assert_array_equal(mels, mels_from_file(speech, FATCHORD))
    assert 0.0 <= mels.min() and mels.max() <= 1.0 and mels.max() > 0.5  # not silence
    assert f"wrote {out}: [80, {mels.shape[1]}] float32" in stdout


def test_mels_follow_the_models_analysis(capsys, workdir, speech, exports):
    odd = workdir / "odd.onnx"  # hop 32, not fatchord's 275
    onnx.save(exports("odd"), odd)
    out = workdir / "odd_mels.npy"
    code, stdout, err = cli(capsys, "mels", speech, "-o", out, "--model", odd, "--json")
    assert code == 0, err
    analysis = MelAnalysis.for_model(onnx.load(odd))
    assert analysis.hop_length == 32
    data = json.loads(stdout)
    assert data["analysis"]["hop_length"] == 32 and data["shape"] == list(np.load(out).shape)
    np.testing.assert_array_equal(np.load(out), mels_from_file(speech, analysis))


def test_vocode_reads_audio_like_the_mels_of_it(capsys, workdir, speech, raw_path):
    """vocode MODEL speech.wav == mels --model MODEL, then vocode MODEL mels.npy (same seed)."""
    mels = workdir / "for_raw.npy"
    assert cli(capsys, "mels", speech, "-o", mels, "--model", raw_path)[0] == 0
    via_mels, via_audio = workdir / "via_mels.wav", workdir / "via_audio.wav"
    code, _, err = cli(capsys, "vocode", raw_path, mels, "-o", via_mels)
    assert code == 0 and err == "", err  # [0, 1] mels: no warning
    code, stdout, err = cli(capsys, "vocode", raw_path, speech, "-o", via_audio, "--json")
    assert code == 0, err
    data = json.loads(stdout)
    assert data["source"] == "audio" and data["warnings"] == []
    rate, audio = read_wav(via_audio)
    assert rate == wavernn_info(onnx.load(raw_path)).sample_rate
    assert audio.size == (np.load(mels).shape[1] - 1) * 275 == data["samples"]
    np.testing.assert_array_equal(audio, read_wav(via_mels)[1])


def test_vocode_reads_flac(capsys, workdir, speech, raw_path):
    flac = workdir / "speech.flac"
    data, rate = soundfile.read(speech)
    soundfile.write(flac, data, rate, format="FLAC")
    code, _, err = cli(capsys, "vocode", raw_path, flac, "-o", workdir / "flac.wav")
    assert code == 0, err
    assert read_wav(workdir / "flac.wav")[1].size > 0


def test_mels_off_the_scale_get_a_warning(capsys, workdir, raw_path):
    db = workdir / "db.npy"  # raw dB, as some pipelines save them
    np.save(db, np.linspace(-100, 0, 80 * 4, dtype=np.float32).reshape(80, 4))
    code, stdout, err = cli(capsys, "vocode", raw_path, db, "-o", workdir / "db.wav")
    assert code == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "db.npy" in lines[0]
    assert "[0, 1]" in lines[0] and "-100" in lines[0]
    assert "warning" not in stdout
    code, stdout, err = cli(capsys, "vocode", raw_path, db, "-o", workdir / "db2.wav", "--json")
    assert code == 0 and err == ""
    assert "[0, 1]" in json.loads(stdout)["warnings"][0]


def test_vocode_and_bench_draw_pictures(capsys, workdir, raw_path):
    pytest.importorskip("matplotlib")
    mels = workdir / "plot_mels.npy"
    np.save(mels, demo_mels(6)[0])
    png = workdir / "vocode.png"
    code, stdout, err = cli(capsys, "vocode", raw_path, mels, "-o", workdir / "plot.wav", "--plot", png)
    assert code == 0, err
    assert png.read_bytes().startswith(PNG_MAGIC) and f"wrote {png}" in stdout
    chart = workdir / "speed.png"
    code, stdout, err = cli(capsys, "bench", raw_path, raw_path, "--frames", "2", "--repeats", "1", "--plot", chart)
    assert code == 0, err
    assert chart.read_bytes().startswith(PNG_MAGIC) and stdout.count("samples/s") == 2
    code, _, err = cli(capsys, "bench", raw_path, "--frames", "2", "--plot", chart)
    assert_one_line_error(code, err, "exists", "--force")


def test_bad_audio_is_one_line(capsys, workdir, raw_path):
    junk = workdir / "junk.wav"
    junk.write_bytes(b"RIFF this is not audio")
    for args in (("mels", junk, "-o", workdir / "never.npy"), ("vocode", raw_path, junk, "-o", workdir / "never.wav"),
                 ("mels", workdir / "absent.wav", "-o", workdir / "never.npy")):
        code, _, err = cli(capsys, *args)
        assert_one_line_error(code, err, args[1].name if args[0] == "mels" else "junk.wav")
    assert not (workdir / "never.npy").exists() and not (workdir / "never.wav").exists()


def test_plot_without_matplotlib_fails_before_any_work(capsys, workdir, raw_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    mels = workdir / "np_mels.npy"
    np.save(mels, demo_mels(3)[0])
    code, _, err = cli(capsys, "vocode", raw_path, mels, "-o", workdir / "np.wav", "--plot", workdir / "np.png")
    assert_one_line_error(code, err, "--plot", "waveopt[plot]")
    assert not (workdir / "np.wav").exists()
