"""``waveopt vocode``: mels .npy -> .wav with one ORT call, with a progress display on long inputs."""

from __future__ import annotations

import io
import time
import wave
from pathlib import Path

import numpy as np
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from waveopt.cli.files import refuse_overwrite

from waveopt.demo_data import uniform_noise
from waveopt.errors import WaveoptError
from waveopt.graph import atomic_write_bytes
from waveopt.model_info import WaveRNNInfo, wavernn_info
from waveopt.runtime import run, session
from waveopt.validate import load_valid_model, processing_invalid

__all__ = ["vocode_command", "vocode_file", "load_mels", "write_wav", "generate"]


def vocode_command(
    model: Path = typer.Argument(..., help="An exported (optionally optimized) WaveRNN model."),
    mels: Path = typer.Argument(..., help="Mel spectrogram .npy: [feat, frames] or [1, feat, frames], float."),
    output: Path = typer.Option(..., "-o", "--output", help="The .wav file to write."),
    seed: int = typer.Option(0, help="Seed of the sampling noise."),
    threads: int = typer.Option(1, help="ORT intra-op threads."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
    allow_invalid: bool = typer.Option(False, "--allow-invalid",
                                       help="Work on a model that fails validation (onnx.checker, waveopt metadata, "
                                            "the Loop's interface)."),
):
    """Generate a waveform from a mel spectrogram with one ORT call."""
    refuse_overwrite(output, [model, mels], force)
    typer.echo(vocode_file(model, mels, output, seed=seed, threads=threads, allow_invalid=allow_invalid))

# Show progress when the estimated run is longer than this.
PROGRESS_AFTER_SECONDS = 3.0


def load_mels(path: Path, info: WaveRNNInfo) -> np.ndarray:
    """A [B, feat, frames] float32 array from a .npy file, or a WaveoptError naming the problem."""
    if not path.is_file():
        raise WaveoptError(f"no such mel file: {path}")
    try:
        mels = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise WaveoptError(f"{path} is not a readable .npy array ({type(exc).__name__})") from None
    if not np.issubdtype(mels.dtype, np.floating):
        raise WaveoptError(f"mels in {path} have dtype {mels.dtype}; expected float32 (or another float)")
    if mels.ndim == 2:
        mels = mels[None]
    if mels.ndim != 3 or mels.shape[1] != info.feat_dims:
        raise WaveoptError(f"mels in {path} have shape {list(mels.shape)}; expected "
                           f"[{info.feat_dims}, frames] or [batch, {info.feat_dims}, frames]")
    if mels.shape[2] < 2:
        raise WaveoptError(f"mels in {path} have {mels.shape[2]} frame(s); at least 2 are needed")
    if info.fold is not None and mels.shape[0] != 1:
        raise WaveoptError(f"this model folds one utterance into a batch; mels in {path} hold {mels.shape[0]}")
    if not np.all(np.isfinite(mels)):
        raise WaveoptError(f"mels in {path} contain NaN or infinite values")
    return np.ascontiguousarray(mels, dtype=np.float32)


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


def vocode_file(model_path: Path, mels_path: Path, output: Path, seed: int = 0, threads: int = 1,
                allow_invalid: bool = False) -> str:
    """Vocode ``mels_path`` with the model into ``output`` (.wav); returns the report line.

    The model is validated first (:mod:`waveopt.validate`) unless ``allow_invalid``.
    """
    model = load_valid_model(model_path, allow_invalid)
    with processing_invalid(model, allow_invalid):
        return _vocode(model, model_path, mels_path, output, seed, threads)


def _vocode(model, model_path: Path, mels_path: Path, output: Path, seed: int, threads: int) -> str:
    info = wavernn_info(model)
    if info is None or info.teacher_forced:
        raise WaveoptError(f"{model_path} is not a free-running waveopt WaveRNN export (export without --teacher-forced)")
    mels = load_mels(mels_path, info)
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
    duration = audio.shape[1] / info.sample_rate
    return (f"wrote {output}: {audio.shape[1]} samples ({duration:.2f} s of audio) in {seconds:.2f} s "
            f"= {audio.shape[1] / seconds:,.0f} samples/s, {duration / seconds:.2f}x real time")


def _generate_with_progress(sess, info, mels, seed):
    """Generate, showing an estimated progress bar when the run will take a while.

    One ORT call runs the whole loop, so progress is estimated from the speed of a short
    warm-up run on the first two frames.
    """
    frames = mels.shape[2]
    probe_start = time.perf_counter()
    generate(sess, info, mels[:, :, :2], seed)
    rate = 2 / max(time.perf_counter() - probe_start, 1e-6)  # frames per second
    estimate = frames / rate
    if estimate < PROGRESS_AFTER_SECONDS:
        return generate(sess, info, mels, seed)
    with Progress(TextColumn("vocoding (estimated)"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), transient=True) as bar:
        task = bar.add_task("vocode", total=estimate)
        start = time.perf_counter()
        audio = generate(sess, info, mels, seed,
                         progress=lambda: bar.update(task, completed=min(time.perf_counter() - start,
                                                                        0.99 * estimate)))
        bar.update(task, completed=estimate)
    return audio
