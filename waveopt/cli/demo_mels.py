"""``waveopt demo-mels``: seeded speech-like mels to try ``vocode`` with."""

from __future__ import annotations

from pathlib import Path

import typer

from waveopt.cli.files import refuse_overwrite, write_npy
from waveopt.demo_data import demo_mels as make_mels
from waveopt.errors import WaveoptError

__all__ = ["demo_mels_command"]


def demo_mels_command(
    output: Path = typer.Option(..., "-o", "--output", help="The .npy file to write ([feat, frames] float32)."),
    frames: int = typer.Option(40, help="Mel frames (275 samples each at the default hop)."),
    feat_dims: int = typer.Option(80, help="Mel bands."),
    seed: int = typer.Option(0, help="Seed."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
):
    """Write seeded speech-like demo mels to try `vocode` with."""
    if frames < 2 or feat_dims < 1:
        raise WaveoptError("--frames must be at least 2 and --feat-dims at least 1")
    refuse_overwrite(output, [], force)
    write_npy(output, make_mels(frames, feat_dims=feat_dims, seed=seed)[0])
    typer.echo(f"wrote {output}: [{feat_dims}, {frames}] float32")
