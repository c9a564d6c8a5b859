"""Pictures: valid, non-blank PNGs written atomically, and one line when matplotlib is missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from waveopt.audio import mel_from_audio
from waveopt.errors import WaveoptError
from waveopt.plots import plot_speed_chart, plot_vocoding

Image = pytest.importorskip("PIL.Image")  # pillow comes with matplotlib
REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def sweep(seconds: float = 0.5, rate: int = 22050) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * (200 * t + 3000 * t * t))).astype(np.float32)


def assert_picture(path: Path, size: tuple[int, int]):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.size == size
        colours = np.asarray(image.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(colours, axis=0)) > 50  # drawn, not blank
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_vocoding_picture(tmp_path):
    audio = sweep()
    plot_vocoding(mel_from_audio(audio)[None], audio, 22050, tmp_path / "v.png")
    assert_picture(tmp_path / "v.png", (1000, 700))


def test_vocoding_picture_of_audio_too_short_for_a_frame(tmp_path):
    plot_vocoding(np.random.default_rng(0).random((80, 3)), np.zeros(550, np.float32), 22050, tmp_path / "s.png")
    assert_picture(tmp_path / "s.png", (1000, 700))


def test_vocoding_picture_refuses_bad_mels(tmp_path):
    with pytest.raises(WaveoptError, match=r"shape \[2, 80, 5\]"):
        plot_vocoding(np.zeros((2, 80, 5)), sweep(), 22050, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_speed_chart(tmp_path):
    rows = [("plain fp32", 1308.0), ("native fp32", 1851.0), ("native int8", 23853.0)]
    plot_speed_chart(rows, tmp_path / "speed.png", realtime=22050)
    assert_picture(tmp_path / "speed.png", (900, 216))


def test_speed_chart_needs_rows(tmp_path):
    with pytest.raises(WaveoptError, match="no speed numbers"):
        plot_speed_chart([], tmp_path / "speed.png")


def test_missing_matplotlib_names_the_extra(tmp_path, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` raise ImportError
    with pytest.raises(WaveoptError, match=r"waveopt\[plot\]") as e:
        plot_speed_chart([("a", 1.0)], tmp_path / "speed.png")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "speed.png").exists()


def run_script(*args):
    return subprocess.run([sys.executable, str(REPO / "scripts" / "plot_benchmarks.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_benchmarks_script_draws_the_speed_table(tmp_path):
    result = run_script("-o", tmp_path / "speed.png")
    assert result.returncode == 0, result.stderr
    assert "(20 bars)" in result.stdout  # RAW and MOL x B=1 and B=16 x five forms
    assert_picture(tmp_path / "speed.png", (900, 760))


def test_benchmarks_script_without_a_speed_table(tmp_path):
    (tmp_path / "B.md").write_text("# nothing\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    result = run_script("--benchmarks", tmp_path / "B.md", "-o", tmp_path / "speed.png")
    assert result.returncode == 2
    assert result.stderr.startswith("error: no table with the columns") and result.stderr.count("\n") == 1
    assert not (tmp_path / "speed.png").exists()
