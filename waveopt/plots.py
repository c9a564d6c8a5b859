"""Pictures as PNG: what a vocoding produced, and how fast each model form runs.

matplotlib is an optional extra (``pip install waveopt[plot]``); it is imported when a picture
is drawn, never at import time, and drawn with the Agg canvas (no pyplot, no display, no global
figure state). Files are written atomically.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np

from .audio import MelAnalysis, mel_from_audio
from .errors import WaveoptError
from .graph import atomic_write_bytes

__all__ = ["plot_vocoding", "plot_speed_chart"]


def plot_vocoding(mels_in: np.ndarray, audio: np.ndarray, sample_rate: int, path: str | os.PathLike[str],
                  analysis: MelAnalysis | None = None) -> None:
    """Input mels beside the mels of the generated audio (same analysis, :mod:`waveopt.audio`), and the waveform.

    ``mels_in`` is [feat, frames] or [1, feat, frames] on fatchord's [0, 1] scale; ``analysis``
    defaults to fatchord's at ``sample_rate`` with ``feat`` bands (pass
    ``MelAnalysis.for_model(model)`` for a model's own hop).
    """
    mels_in = np.asarray(mels_in, dtype=np.float32)
    if mels_in.ndim == 3 and mels_in.shape[0] == 1:
        mels_in = mels_in[0]
    if mels_in.ndim != 2:
        raise WaveoptError(f"expected mels [feat, frames] or [1, feat, frames], got shape {list(mels_in.shape)}")
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    analysis = analysis or MelAnalysis(sample_rate=sample_rate, n_mels=mels_in.shape[0])
    mels_out = mel_from_audio(audio, analysis) if audio.size > analysis.n_fft // 2 else None

    figure, canvas = _figure(figsize=(10, 7))
    grid = figure.add_gridspec(3, 2, height_ratios=[3, 3, 2], width_ratios=[40, 1])
    for row, (title, mels) in enumerate([("input mels", mels_in), ("mels of the generated audio", mels_out)]):
        ax = figure.add_subplot(grid[row, 0])
        ax.set_title(title, fontsize=10, loc="left")
        ax.set_ylabel("mel band")
        if mels is None:
            ax.text(0.5, 0.5, f"audio too short for one frame ({audio.size} samples)", ha="center",
                    va="center", transform=ax.transAxes)
            continue
        image = ax.imshow(mels, origin="lower", aspect="auto", vmin=0.0, vmax=1.0, cmap="magma",
                          interpolation="nearest")
        ax.set_xlabel("frame")
        figure.colorbar(image, cax=figure.add_subplot(grid[row, 1]), label="[0, 1] log-mel")
    ax = figure.add_subplot(grid[2, 0])
    ax.plot(np.arange(audio.size) / sample_rate, audio, linewidth=0.5, color="tab:blue")
    ax.set_title(f"waveform ({audio.size:,} samples at {sample_rate:,} Hz)", fontsize=10, loc="left")
    ax.set_xlabel("seconds")
    ax.set_xlim(0, max(audio.size, 1) / sample_rate)
    ax.set_ylim(-1.05, 1.05)
    _save(figure, canvas, path)


def plot_speed_chart(rows: Sequence[tuple[str, float]], path: str | os.PathLike[str], realtime: float = 22050,
                     title: str = "samples per second (higher is faster)") -> None:
    """Horizontal bars of samples/s per model form, with the real-time line at ``realtime`` samples/s.

    ``rows`` are (label, samples/s), drawn top to bottom in the given order.
    """
    if not rows:
        raise WaveoptError("no speed numbers to draw")
    labels = [label for label, _ in rows]
    speeds = np.array([float(speed) for _, speed in rows])
    figure, canvas = _figure(figsize=(9, 1.2 + 0.32 * len(rows)))
    ax = figure.add_subplot(1, 1, 1)
    y = np.arange(len(rows))
    bars = ax.barh(y, speeds, color=["tab:green" if s >= realtime else "tab:blue" for s in speeds])
    ax.set_yticks(y, labels, fontsize=9)
    ax.axvline(realtime, color="tab:red", linestyle="--", linewidth=1.2)
    ax.text(realtime, -0.75, f"real time ({realtime:,.0f}/s) ", color="tab:red", fontsize=9, ha="right",
            va="center")
    for bar, speed in zip(bars, speeds):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {speed:,.0f}", va="center", fontsize=8)
    ax.set_xlim(0, max(speeds.max(), realtime) * 1.15)
    ax.set_ylim(len(rows) - 0.5, -1.2)
    ax.set_xlabel("samples/s")
    ax.set_title(title, fontsize=10, loc="left")
    ax.grid(axis="x", alpha=0.3)
    _save(figure, canvas, path)


def _figure(figsize: tuple[float, float]):
    # Imported here, not at the top: matplotlib is the optional extra "plot".
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise WaveoptError("drawing pictures needs matplotlib: pip install 'waveopt[plot]'") from None
    figure = Figure(figsize=figsize, dpi=100, layout="constrained")
    return figure, FigureCanvasAgg(figure)


def _save(figure, canvas, path: str | os.PathLike[str]) -> None:
    buffer = io.BytesIO()
    canvas.print_png(buffer)
    atomic_write_bytes(path, buffer.getvalue())
