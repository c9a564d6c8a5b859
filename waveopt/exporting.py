"""``waveopt export``: build or load the PyTorch model, export it, save atomically."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import WaveoptError
from .graph import save_model
from .report import format_stats, graph_stats

__all__ = ["export_model"]


def export_model(output: Path, *, checkpoint: Path | None, hparams: dict, sample_rate: int | None = None,
                 seed: int = 0, fold: tuple[int, int] | None = None, teacher_forced: bool = False) -> str:
    """Export a checkpoint (or the demo model) to ``output``; returns a short report."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise WaveoptError("export needs PyTorch: pip install 'waveopt[torch]'") from None
    from .models import HParams, demo_model, export_wavernn
    from .models.checkpoint import load_checkpoint

    given = {k: v for k, v in hparams.items() if v is not None}
    if sample_rate is not None:
        given["sample_rate"] = sample_rate
    if checkpoint is not None:
        shape_options = sorted(set(given) - {"sample_rate"})
        if shape_options:
            raise WaveoptError(f"a checkpoint's shape comes from its weights; drop {', '.join(shape_options)}")
        model = load_checkpoint(checkpoint, **given)
        source = str(checkpoint)
    else:
        try:
            hp = HParams(**given)
        except (TypeError, ValueError) as exc:
            raise WaveoptError(f"bad hyperparameters: {exc}") from None
        _check_positive(hp)
        model = demo_model(hp, seed=seed)
        source = f"demo model (seed {seed})"
    if fold is not None and (fold[0] < 1 or fold[1] < 1):
        raise WaveoptError(f"--target and --overlap must be positive, got {fold[0]} and {fold[1]}")
    proto = export_wavernn(model, teacher_forced=teacher_forced, fold=fold)
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
