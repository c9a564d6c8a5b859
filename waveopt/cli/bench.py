"""``waveopt bench``: samples per second and real-time factor of one model in ORT."""

from __future__ import annotations

from pathlib import Path

import typer

from waveopt.errors import WaveoptError
from waveopt.model_info import example_inputs, wavernn_info
from waveopt.report import graph_stats
from waveopt.runtime import run, session, time_calls
from waveopt.validate import load_valid_model, processing_invalid

__all__ = ["bench_command", "bench_file"]


def bench_command(
    model: Path = typer.Argument(..., help="An exported (optionally optimized) WaveRNN model."),
    frames: int = typer.Option(8, help="Mel frames per run."),
    batch: int = typer.Option(1, help="Utterances per run (unfolded models)."),
    threads: int = typer.Option(1, help="ORT intra-op threads."),
    repeats: int = typer.Option(5, help="Timed runs; the median is reported."),
    warmup: int = typer.Option(1, help="Untimed runs first."),
    allow_invalid: bool = typer.Option(False, "--allow-invalid",
                                       help="Work on a model that fails validation (onnx.checker, waveopt metadata, "
                                            "the Loop's interface)."),
):
    """Samples per second and real-time factor of a model in ORT (median after warm-up)."""
    typer.echo(bench_file(model, frames=frames, batch=batch, threads=threads, repeats=repeats, warmup=warmup,
                          allow_invalid=allow_invalid))


def bench_file(model_path: Path, frames=8, batch=1, threads=1, repeats=5, warmup=1, allow_invalid=False) -> str:
    """Time the model at ``model_path`` (validated first unless ``allow_invalid``); returns the report."""
    for name, value in (("frames", frames - 1), ("batch", batch), ("threads", threads), ("repeats", repeats)):
        if value < 1:
            raise WaveoptError(f"--{name} must be at least {2 if name == 'frames' else 1}")
    model = load_valid_model(model_path, allow_invalid)
    with processing_invalid(model, allow_invalid):
        return _bench(model, model_path, frames, batch, threads, repeats, warmup)


def _bench(model, model_path: Path, frames, batch, threads, repeats, warmup) -> str:
    info = wavernn_info(model)
    if info is None:
        raise WaveoptError(f"{model_path} is not a waveopt WaveRNN export")
    feed = example_inputs(model, frames=frames, batch=batch)
    sess = session(model, threads=threads)
    timing = time_calls(lambda: run(sess, None, feed), repeats=repeats, warmup=warmup)
    steps, sequences = info.loop_shape(frames, feed["mels"].shape[0])
    samples = steps * sequences  # loop steps run, over all sequences
    rate = samples / timing.median
    macs = graph_stats(model).macs_per_step
    return (f"{model_path}: {info.mode.upper()}, {frames} frames x {sequences} sequence(s), {threads} thread(s)\n"
            f"  {rate:,.0f} samples/s (median of {repeats}, spread {timing.spread:.0%}), "
            f"{rate / info.sample_rate:.3f}x real time, "
            f"{macs:,} MACs/sample = {rate * macs * 1e-9:.2f} GMAC/s")
