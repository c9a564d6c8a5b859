"""``waveopt export``: build or load the PyTorch model, export it, save atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from waveopt.cli.common import progress_for, quiet_option
from waveopt.cli.files import refuse_overwrite
from waveopt.errors import WaveoptError
from waveopt.graph import save_model
from waveopt.progress import stage
from waveopt.report import format_stats, graph_stats

__all__ = ["export_command", "export_model"]


def export_command(
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the ONNX model."),
    checkpoint: Optional[Path] = typer.Option(None, help="A fatchord WaveRNN checkpoint (state_dict)."),
    demo: bool = typer.Option(False, "--demo", help="Export the built-in seeded demo model."),
    mode: Optional[str] = typer.Option(None, help="raw or mol (demo only; a checkpoint knows its mode)."),
    bits: Optional[int] = typer.Option(None, help="RAW bits (demo; default 9)."),
    rnn_dims: Optional[int] = typer.Option(None, help="GRU width (demo; default 512)."),
    fc_dims: Optional[int] = typer.Option(None, help="Dense width (demo; default 512)."),
    feat_dims: Optional[int] = typer.Option(None, help="Mel bands (demo; default 80)."),
    compute_dims: Optional[int] = typer.Option(None, help="MelResNet width (demo; default 128)."),
    res_out_dims: Optional[int] = typer.Option(None, help="Aux width, 4 chunks (demo; default 128)."),
    res_blocks: Optional[int] = typer.Option(None, help="MelResNet blocks (demo; default 10)."),
    pad: Optional[int] = typer.Option(None, help="Context frames each side (demo; default 2)."),
    upsample: Optional[str] = typer.Option(None, help="Upsample factors, e.g. 5,5,11 (demo)."),
    sample_rate: Optional[int] = typer.Option(None, help="Sample rate of the audio (default 22050)."),
    seed: int = typer.Option(0, help="Seed of the demo model's weights."),
    fold: bool = typer.Option(False, "--fold", help="Batched fold generation (fatchord's batched mode)."),
    target: int = typer.Option(11000, help="Samples per fold (with --fold)."),
    overlap: int = typer.Option(550, help="Cross-faded samples between folds (with --fold)."),
    teacher_forced: bool = typer.Option(False, "--teacher-forced",
                                        help="Loop over given previous samples; output per-step logits."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
    quiet: bool = quiet_option(),
):
    """Export a WaveRNN as ONE ONNX model: conditioning network + the sample loop as an ONNX Loop."""
    if demo == (checkpoint is not None):
        raise WaveoptError("give exactly one of --checkpoint CKPT or --demo")
    refuse_overwrite(output, [checkpoint] if checkpoint else [], force)
    shape = dict(mode=mode, bits=bits, rnn_dims=rnn_dims, fc_dims=fc_dims, feat_dims=feat_dims,
                 compute_dims=compute_dims, res_out_dims=res_out_dims, res_blocks=res_blocks, pad=pad,
                 upsample_factors=_parse_factors(upsample))
    with progress_for(quiet):
        report = export_model(output, checkpoint=checkpoint, hparams=shape, sample_rate=sample_rate, seed=seed,
                              fold=(target, overlap) if fold else None, teacher_forced=teacher_forced)
    typer.echo(report)


def _parse_factors(text: Optional[str]):
    if text is None:
        return None
    try:
        factors = tuple(int(f) for f in text.split(","))
    except ValueError:
        raise WaveoptError(f"--upsample takes integers separated by commas, e.g. 5,5,11; got {text!r}") from None
    if not factors or min(factors) < 1:
        raise WaveoptError(f"--upsample factors must be positive, got {text!r}")
    return factors


def export_model(output: Path, *, checkpoint: Path | None, hparams: dict, sample_rate: int | None = None,
                 seed: int = 0, fold: tuple[int, int] | None = None, teacher_forced: bool = False) -> str:
    """Export a checkpoint (or the demo model) to ``output``; returns a short report."""
    try:  # PyTorch is an optional dependency: imported only when a command needs it
        from waveopt.models import HParams, demo_model, export_wavernn
        from waveopt.models.checkpoint import load_checkpoint
    except ImportError as exc:
        if exc.name != "torch":
            raise
        raise WaveoptError("export needs PyTorch: pip install 'waveopt[torch]'") from None

    given = {k: v for k, v in hparams.items() if v is not None}
    if sample_rate is not None:
        given["sample_rate"] = sample_rate
    if checkpoint is not None:
        shape_options = sorted(set(given) - {"sample_rate"})
        if shape_options:
            raise WaveoptError(f"a checkpoint's shape comes from its weights; drop {', '.join(shape_options)}")
        with stage(f"loading {checkpoint}"):
            model = load_checkpoint(checkpoint, **given)
        source = str(checkpoint)
    else:
        try:
            hp = HParams(**given)
        except (TypeError, ValueError) as exc:
            raise WaveoptError(f"bad hyperparameters: {exc}") from None
        _check_positive(hp)
        with stage("building and calibrating the demo model"):
            model = demo_model(hp, seed=seed)
        source = f"demo model (seed {seed})"
    if fold is not None and (fold[0] < 1 or fold[1] < 1):
        raise WaveoptError(f"--target and --overlap must be positive, got {fold[0]} and {fold[1]}")
    with stage("exporting with torch.onnx (dynamo); the fatchord-size model takes a few minutes"):
        proto = export_wavernn(model, teacher_forced=teacher_forced, fold=fold)
    with stage(f"writing {output}"):
        save_model(proto, output)
    form = "teacher-forced" if teacher_forced else "free-running"
    folded = f", folds of {fold[0]}+2x{fold[1]}" if fold else ""
    lines = [f"exported {source}: {model.hp.mode.upper()}, {form}{folded} -> {output}",
             format_stats(graph_stats(proto, file_size=os.path.getsize(output)), op_rows=False)]
    return "\n".join(lines)


def _check_positive(hp) -> None:
    for name in ("bits", "rnn_dims", "fc_dims", "feat_dims", "compute_dims", "res_out_dims"):
        if getattr(hp, name) < 1:
            raise WaveoptError(f"--{name.replace('_', '-')} must be positive, got {getattr(hp, name)}")
    if hp.res_blocks < 0 or hp.pad < 0:
        raise WaveoptError("--res-blocks and --pad must not be negative")
