"""``waveopt bench``: samples per second and real-time factor of one model in ORT."""

from __future__ import annotations

from pathlib import Path

import typer

from waveopt.errors import WaveoptError
from waveopt.graph import load_model
from waveopt.model_info import example_inputs, wavernn_info
from waveopt.report import graph_stats
from waveopt.runtime import session, time_calls

__all__ = ["bench_command", "bench_file"]


def bench_command(
    model: Path = typer.Argument(..., help="An exported (optionally optimized) WaveRNN model."),
    frames: int = typer.Option(8, help="Mel frames per run."),
    batch: int = typer.Option(1, help="Utterances per run (unfolded models)."),
    threads: int = typer.Option(1, help="ORT intra-op threads."),
    repeats: int = typer.Option(5, help="Timed runs; the median is reported."),
    warmup: int = typer.Option(1, help="Untimed runs first."),
):
    """Samples per second and real-time factor of a model in ORT (median after warm-up)."""
    typer.echo(bench_file(model, frames=frames, batch=batch, threads=threads, repeats=repeats, warmup=warmup))


def bench_file(model_path: Path, frames=8, batch=1, threads=1, repeats=5, warmup=1) -> str:
    for name, value in (("frames", frames - 1), ("batch", batch), ("threads", threads), ("repeats", repeats)):
        if value < 1:
            raise WaveoptError(f"--{name} must be at least {2 if name == 'frames' else 1}")
    model = load_model(model_path)
    info = wavernn_info(model)
    if info is None:
        raise WaveoptError(f"{model_path} is not a waveopt WaveRNN export")
    feed = example_inputs(model, frames=frames, batch=batch)
    sess = session(model, threads=threads)
    timing = time_calls(lambda: sess.run(None, feed), repeats=repeats, warmup=warmup)
    steps, sequences = info.loop_shape(frames, feed["mels"].shape[0])
    samples = steps * sequences  # loop steps run, over all sequences
    rate = samples / timing.median
    macs = graph_stats(model).macs_per_step
    return (f"{model_path}: {info.mode.upper()}, {frames} frames x {sequences} sequence(s), {threads} thread(s)\n"
            f"  {rate:,.0f} samples/s (median of {repeats}, spread {timing.spread:.0%}), "
            f"{rate / info.sample_rate:.3f}x real time, "
            f"{macs:,} MACs/sample = {rate * macs * 1e-9:.2f} GMAC/s")
