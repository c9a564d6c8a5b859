"""``waveopt bench``: samples per second and real-time factor of models in ORT, as text, JSON or a chart."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import typer

from waveopt.cli.common import (allow_invalid_option, batch_option, emit_json, frames_option, json_option,
                                progress_for, quiet_option, require_plotting)
from waveopt.cli.files import refuse_overwrite
from waveopt.errors import WaveoptError
from waveopt.model_info import example_inputs, wavernn_info
from waveopt.plots import plot_speed_chart
from waveopt.progress import stage
from waveopt.report import graph_stats
from waveopt.runtime import run, session, time_calls
from waveopt.validate import load_valid_model, processing_invalid

__all__ = ["bench_command", "bench_file", "BenchResult"]


def bench_command(
    models: list[Path] = typer.Argument(..., metavar="MODEL",
                                        help="Exported (optionally optimized) WaveRNN models, timed one after another."),
    frames: int = frames_option(8),
    batch: int = batch_option(),
    threads: int = typer.Option(1, help="Threads: the native ops' worker team for native models, else ORT intra-op threads."),
    repeats: int = typer.Option(5, help="Timed runs; the median is reported."),
    warmup: int = typer.Option(1, help="Untimed runs first."),
    plot: Optional[Path] = typer.Option(None, "--plot", metavar="PNG",
                                        help="Also draw samples/s per model with the real-time line "
                                             "(needs matplotlib: waveopt[plot])."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --plot file."),
    as_json: bool = json_option(),
    quiet: bool = quiet_option(),
    allow_invalid: bool = allow_invalid_option(),
):
    """Samples per second and real-time factor of models in ORT (median after warm-up)."""
    if plot is not None:
        require_plotting()
        refuse_overwrite(plot, list(models), force)
    with progress_for(quiet, as_json):
        results = []
        for path in models:
            results.append(bench_file(path, frames=frames, batch=batch, threads=threads, repeats=repeats,
                                      warmup=warmup, allow_invalid=allow_invalid))
            if not as_json:
                typer.echo(results[-1].text())
        if plot is not None:
            with stage(f"drawing {plot}"):
                plot_speed_chart([(f"{Path(r.model).name}, {r.sequences} seq.", r.samples_per_second)
                                  for r in results], plot, realtime=results[0].sample_rate,
                                 title=f"samples per second, {frames} frames, {threads} thread(s) (higher is faster)")
    if as_json:
        emit_json(results[0].as_dict() if len(results) == 1 else [r.as_dict() for r in results])
    elif plot is not None:
        typer.echo(f"wrote {plot}")


@dataclasses.dataclass
class BenchResult:
    """One model's speed: loop steps run over all sequences per second (median of the timed runs)."""

    model: str
    mode: str
    frames: int
    batch: int
    sequences: int
    threads: int
    repeats: int
    median_seconds: float
    spread: float
    samples_per_second: float
    real_time_factor: float  # samples/s over the sample rate: above 1 is faster than real time
    sample_rate: int
    macs_per_sample: int
    gmacs_per_second: float

    def text(self) -> str:
        return (f"{self.model}: {self.mode.upper()}, {self.frames} frames x {self.sequences} sequence(s), "
                f"{self.threads} thread(s)\n"
                f"  {self.samples_per_second:,.0f} samples/s (median of {self.repeats}, spread {self.spread:.0%}), "
                f"{self.real_time_factor:.3f}x real time, "
                f"{self.macs_per_sample:,} MACs/sample = {self.gmacs_per_second:.2f} GMAC/s")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def bench_file(model_path: Path, frames=8, batch=1, threads=1, repeats=5, warmup=1,
               allow_invalid=False) -> BenchResult:
    """Time the model at ``model_path`` (validated first unless ``allow_invalid``)."""
    for name, value in (("frames", frames - 1), ("batch", batch), ("threads", threads), ("repeats", repeats)):
        if value < 1:
            raise WaveoptError(f"--{name} must be at least {2 if name == 'frames' else 1}")
    model = load_valid_model(model_path, allow_invalid)
    with processing_invalid(model, allow_invalid):
        return _bench(model, model_path, frames, batch, threads, repeats, warmup)


def _bench(model, model_path: Path, frames, batch, threads, repeats, warmup) -> BenchResult:
    info = wavernn_info(model)
    if info is None:
        raise WaveoptError(f"{model_path} is not a waveopt WaveRNN export")
    feed = example_inputs(model, frames=frames, batch=batch)
    with stage(f"creating the session for {model_path}"):
        sess = session(model, threads=threads)
    with stage(f"timing {model_path}: {warmup} warm-up and {repeats} timed run(s)"):
        timing = time_calls(lambda: run(sess, None, feed), repeats=repeats, warmup=warmup)
    steps, sequences = info.loop_shape(frames, feed["mels"].shape[0])
    samples = steps * sequences  # loop steps run, over all sequences
    rate = samples / timing.median
    stats = graph_stats(model, frames=frames, batch=batch)  # the cost model optimize and profile use
    macs = round(stats.macs_per_sample) if stats.macs_per_sample is not None else stats.macs_per_step
    return BenchResult(model=str(model_path), mode=info.mode, frames=frames, batch=feed["mels"].shape[0],
                       sequences=sequences, threads=threads, repeats=repeats, median_seconds=timing.median,
                       spread=timing.spread, samples_per_second=rate, real_time_factor=rate / info.sample_rate,
                       sample_rate=info.sample_rate, macs_per_sample=macs, gmacs_per_second=rate * macs * 1e-9)
