"""``waveopt vocode``: mels .npy (or an audio file, for copy-synthesis) -> .wav with one ORT call.

Mels outside fatchord's [0, 1] scale get a warning; long inputs a progress display on stderr;
``--plot`` draws the input mels beside the output's mels and the waveform.
"""

from __future__ import annotations

import dataclasses
import io
import time
import wave
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from waveopt.audio import MelAnalysis, check_mel_scale, load_audio, mel_from_audio
from waveopt.cli.common import (allow_invalid_option, emit_json, json_option, progress_for, quiet_option,
                                require_plotting)
from waveopt.cli.files import refuse_overwrite
from waveopt.demo_data import uniform_noise
from waveopt.errors import WaveoptError
from waveopt.graph import atomic_write_bytes
from waveopt.mel_files import load_mels
from waveopt.model_info import WaveRNNInfo, wavernn_info
from waveopt.plots import plot_vocoding
from waveopt.progress import enabled as progress_enabled
from waveopt.progress import stage
from waveopt.runtime import run, session
from waveopt.validate import load_valid_model, processing_invalid

__all__ = ["vocode_command", "vocode_file", "VocodeResult", "write_wav", "generate"]


def vocode_command(
    model: Path = typer.Argument(..., metavar="MODEL", help="An exported (optionally optimized) WaveRNN model."),
    mels: Path = typer.Argument(..., metavar="MELS",
                                help="Mel spectrogram .npy: [feat, frames] or [1, feat, frames], float on "
                                     "fatchord's [0, 1] scale; or an audio file (WAV, FLAC, ...) to resynthesize: "
                                     "its mels are computed with the model's own analysis."),
    output: Path = typer.Option(..., "-o", "--output", help="The .wav file to write."),
    plot: Optional[Path] = typer.Option(None, "--plot", metavar="PNG",
                                        help="Also draw the input mels, the output's mels and the waveform "
                                             "(needs matplotlib: waveopt[plot])."),
    seed: int = typer.Option(0, help="Seed of the sampling noise."),
    threads: int = typer.Option(1, help="Threads: the native ops' worker team for native models, else ORT intra-op threads."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
    as_json: bool = json_option(),
    quiet: bool = quiet_option(),
    allow_invalid: bool = allow_invalid_option(),
):
    """Generate a waveform from a mel spectrogram with one ORT call."""
    refuse_overwrite(output, [model, mels], force)
    if plot is not None:
        require_plotting()
        refuse_overwrite(plot, [model, mels, output], force)
    with progress_for(quiet, as_json):
        result = vocode_file(model, mels, output, seed=seed, threads=threads, plot=plot,
                             allow_invalid=allow_invalid)
    if as_json:
        emit_json(result.as_dict())
        return
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(result.text())


# A MELS argument with one of these suffixes holds mels; anything else is read as audio.
MEL_SUFFIXES = (".npy", ".npz")

# Show progress when the estimated run is longer than this.
PROGRESS_AFTER_SECONDS = 3.0


def generate(sess, info: WaveRNNInfo, mels: np.ndarray, seed: int = 0, progress=None) -> np.ndarray:
    """Run the whole generation once; ``progress()`` is called every 0.2 s while it runs.

    The call can be interrupted (SIGINT/SIGTERM stop ORT cleanly, see :func:`waveopt.runtime.run`).
    """
    steps, sequences = info.loop_shape(mels.shape[2], mels.shape[0])
    feed = {"mels": mels, "noise": uniform_noise(steps, sequences, seed)}
    return run(sess, ["wave"], feed, while_waiting=progress)[0]


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM mono .wav, written atomically."""
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    atomic_write_bytes(path, buffer.getvalue())


@dataclasses.dataclass
class VocodeResult:
    """What ``waveopt vocode`` wrote and how fast it ran."""

    output: str
    mels_shape: list[int]
    samples: int
    sample_rate: int
    audio_seconds: float
    seconds: float
    samples_per_second: float
    real_time_factor: float  # audio seconds per second of generation: above 1 is faster than real time
    source: str  # "mels" (a .npy) or "audio" (mels computed from an audio file)
    plot: Optional[str] = None
    warnings: list[str] = dataclasses.field(default_factory=list)

    def text(self) -> str:
        lines = [f"wrote {self.output}: {self.samples} samples ({self.audio_seconds:.2f} s of audio) in "
                 f"{self.seconds:.2f} s = {self.samples_per_second:,.0f} samples/s, "
                 f"{self.real_time_factor:.2f}x real time"]
        if self.plot:
            lines.append(f"wrote {self.plot}: input mels, the output's mels and the waveform")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def vocode_file(model_path: Path, mels_path: Path, output: Path, seed: int = 0, threads: int = 1,
                plot: Path | None = None, allow_invalid: bool = False) -> VocodeResult:
    """Vocode the mels of ``mels_path`` (a mel .npy, or an audio file to resynthesize) into ``output``.

    The model is validated first (:mod:`waveopt.validate`) unless ``allow_invalid``.
    """
    model = load_valid_model(model_path, allow_invalid)
    with processing_invalid(model, allow_invalid):
        return _vocode(model, model_path, mels_path, output, seed, threads, plot)


def _vocode(model, model_path: Path, mels_path: Path, output: Path, seed: int, threads: int,
            plot: Path | None) -> VocodeResult:
    info = wavernn_info(model)
    if info is None:
        raise WaveoptError(f"{model_path} is not a WaveRNN written by waveopt (no waveopt WaveRNN metadata); "
                           "vocode runs the models of `waveopt export` and `waveopt optimize`")
    if info.teacher_forced:
        raise WaveoptError(f"{model_path} is a teacher-forced export (it reads given samples instead of "
                           "generating them); vocode needs one exported without --teacher-forced")
    analysis = MelAnalysis.for_model(model)
    from_audio = mels_path.suffix.lower() not in MEL_SUFFIXES
    warnings = []
    if from_audio:
        with stage(f"computing the mels of {mels_path}"):
            mels = mel_from_audio(load_audio(mels_path, analysis.sample_rate), analysis)[None]
    else:
        mels = load_mels(mels_path, info)
        scale = check_mel_scale(mels)
        if scale:
            warnings.append(f"{mels_path}: {scale}")
    with stage(f"creating the session for {model_path}"):
        sess = session(model, threads=threads)
    if mels.shape[0] > 1:
        raise WaveoptError(f"vocode writes one .wav; mels in {mels_path} hold a batch of {mels.shape[0]}")
    start = time.perf_counter()
    audio = _generate_with_progress(sess, info, mels, seed)
    seconds = time.perf_counter() - start
    expected = [1, info.wave_length(mels.shape[2])]
    if list(audio.shape) != expected:
        raise WaveoptError(f"{model_path} produced a wave of shape {list(audio.shape)} for these mels, expected "
                           f"{expected}; nothing written")
    bad = int(np.count_nonzero(~np.isfinite(audio)))
    if bad:
        raise WaveoptError(f"{model_path} produced {bad} NaN or infinite sample(s) of {audio.size}; "
                           "nothing written (are its weights finite?)")
    write_wav(output, audio[0], info.sample_rate)
    if plot is not None:
        with stage(f"drawing {plot}"):
            plot_vocoding(mels[0], audio[0], info.sample_rate, plot, analysis=analysis)
    duration = audio.shape[1] / info.sample_rate
    return VocodeResult(output=str(output), mels_shape=list(mels.shape), samples=int(audio.shape[1]),
                        sample_rate=info.sample_rate, audio_seconds=duration, seconds=seconds,
                        samples_per_second=audio.shape[1] / seconds, real_time_factor=duration / seconds,
                        source="audio" if from_audio else "mels", plot=str(plot) if plot else None,
                        warnings=warnings)


def _generate_with_progress(sess, info, mels, seed):
    """Generate, showing an estimated progress bar on stderr when the run will take a while.

    One ORT call runs the whole loop, so progress is estimated from the speed of a short
    warm-up run on the first two frames.
    """
    frames = mels.shape[2]
    probe_start = time.perf_counter()
    generate(sess, info, mels[:, :, :2], seed)
    rate = 2 / max(time.perf_counter() - probe_start, 1e-6)  # frames per second
    estimate = frames / rate
    if not progress_enabled() or estimate < PROGRESS_AFTER_SECONDS:
        return generate(sess, info, mels, seed)
    console = Console(stderr=True)
    if not console.is_terminal:  # a log (WAVEOPT_PROGRESS=1), not a terminal: a line instead of a bar
        with stage(f"vocoding {frames} frames (about {estimate:.0f} s estimated)"):
            return generate(sess, info, mels, seed)
    with Progress(TextColumn("vocoding (estimated)"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), transient=True, console=console) as bar:
        task = bar.add_task("vocode", total=estimate)
        start = time.perf_counter()
        audio = generate(sess, info, mels, seed,
                         progress=lambda: bar.update(task, completed=min(time.perf_counter() - start,
                                                                        0.99 * estimate)))
        bar.update(task, completed=estimate)
    return audio
