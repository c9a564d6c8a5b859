"""``waveopt profile``: time per WaveRNN module and per sample with ORT's profiler."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from waveopt.cli.common import (allow_invalid_option, batch_option, emit_json, frames_option, json_option,
                                progress_for, quiet_option)
from waveopt.errors import WaveoptError
from waveopt.profile.inputs import parse_dims
from waveopt.profile.profiler import profile_model
from waveopt.profile.table import comparison_rows, format_comparison, format_nodes, format_profile
from waveopt.profile.trace import TraceWriter

__all__ = ["profile_command"]


def profile_command(
    models: List[Path] = typer.Argument(..., metavar="MODEL",
                                        help="A model, or two to compare module by module (A B)."),
    threads: int = typer.Option(1, help="Threads: the native ops' worker team for native models, else ORT intra-op threads."),
    frames: int = frames_option(2),
    batch: int = batch_option(),
    runs: int = typer.Option(3, help="Profiled runs after the warm-up (unprofiled runs are interleaved)."),
    warmup: int = typer.Option(1, help="Runs of each session before the measured ones."),
    as_json: bool = json_option(),
    trace: Optional[Path] = typer.Option(None, "--trace",
                                         help="Write a Chrome / Perfetto trace of the measured runs."),
    nodes: int = typer.Option(0, "--nodes", help="Also list the N slowest nodes."),
    dim: List[str] = typer.Option([], "--dim", metavar="NAME=N",
                                  help="NAME=N for a symbolic input dim of a foreign model (repeatable)."),
    inputs: Optional[Path] = typer.Option(None, "--inputs", metavar="NPZ", help=".npz of input arrays by name (foreign models)."),
    no_estimate: bool = typer.Option(False, "--skip-estimate", "--no-estimate",
                                     help="Skip the calibration of the profiler's cost (no estimated unprofiled time)."),
    quiet: bool = quiet_option(),
    allow_invalid: bool = allow_invalid_option(),
):
    """Time per WaveRNN module and per sample with ORT's profiler; compare two models."""
    if len(models) > 2:
        raise WaveoptError(f"give one model, or two to compare; got {len(models)}")
    dims = parse_dims(dim)
    writer = TraceWriter(trace) if trace is not None else None
    try:
        with progress_for(quiet, as_json):
            profiles = [profile_model(path, threads=threads, frames=frames, batch=batch, runs=runs, warmup=warmup,
                                      dims=dims, inputs=inputs, calibrate=not no_estimate, trace=writer, trace_pid=i,
                                      allow_invalid=allow_invalid)
                        for i, path in enumerate(models, start=1)]
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        writer.close()
    if as_json:
        data = profiles[0].as_dict() if len(profiles) == 1 else {
            "a": profiles[0].as_dict(), "b": profiles[1].as_dict(),
            "comparison": comparison_rows(profiles[0], profiles[1])}
        emit_json(data)
        return
    blocks = []
    for p in profiles:
        blocks.append(format_profile(p))
        if nodes or p.unit == "run":
            blocks.append(format_nodes(p, top=nodes or 25))
    if len(profiles) == 2:
        blocks.append(format_comparison(*profiles))
    if writer is not None:
        blocks.append(f"trace written to {trace} (open in ui.perfetto.dev or chrome://tracing)")
    typer.echo("\n\n".join(blocks))
