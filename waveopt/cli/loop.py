"""``waveopt loop``: wrap an exported one-step cell into the whole-generation Loop model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from waveopt.cli.files import refuse_overwrite
from waveopt.errors import WaveoptError
from waveopt.graph import save_model
from waveopt.loop import LAYOUTS, SAMPLERS, from_step
from waveopt.report import format_stats, graph_stats

__all__ = ["loop_command"]


def loop_command(
    step: Path = typer.Argument(..., help="The one-step model: (prev sample, conditioning..., states...) -> "
                                          "(logits, states...)."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the Loop model."),
    conditioning: Optional[Path] = typer.Option(None, "--conditioning",
                                                help="The conditioning model (mels -> per-step conditioning)."),
    sampler: str = typer.Option("raw-icdf", help=f"One of {', '.join(SAMPLERS)}."),
    layout: str = typer.Option("btc", "--layout",
                               help=f"The conditioning's layout: {', '.join(LAYOUTS)} (b batch, t steps, c channels)."),
    noise_width: Optional[int] = typer.Option(None, help="The noise's trailing size (0: noise is steps x batch; "
                                                          "default 2, or 11 for mol-gumbel)."),
    noise_index: int = typer.Option(0, help="Where raw-icdf reads its uniform in a noise row."),
    teacher_forced: bool = typer.Option(False, "--teacher-forced",
                                        help="Loop over given previous samples; output per-step logits."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
):
    """Wrap your exported one-step WaveRNN cell into the whole-generation Loop model."""
    inputs = [step] + ([conditioning] if conditioning else [])
    for path in inputs:
        if not path.is_file():
            raise WaveoptError(f"no such file: {path}")
    refuse_overwrite(output, inputs, force)
    model = from_step(step, conditioning, sampler, teacher_forced=teacher_forced, conditioning_layout=layout,
                      noise_width=noise_width, noise_index=noise_index)
    save_model(model, output)
    typer.echo(f"wrote {output}")
    typer.echo(format_stats(graph_stats(model)))
