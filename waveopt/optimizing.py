"""``waveopt optimize``: load, run the pass pipeline, check, save, and the before/after table."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .check import compare_models, random_inputs
from .graph import load_model, save_model
from .model_info import example_inputs, wavernn_info
from .pipeline import optimize, resolve_passes
from .report import format_comparison, graph_stats

__all__ = ["optimize_file", "check_inputs_for"]


def check_inputs_for(model, frames: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs for checking ``model``: demo mels and noise for our exports, random otherwise."""
    if wavernn_info(model) is not None:
        return example_inputs(model, frames=frames, seed=seed)
    return random_inputs(model, seed=seed)


def optimize_file(model_path: Path, output: Path, *, passes=None, skip=(), preset="portable", pad=16,
                  check=False, check_each=False, check_frames=8) -> str:
    """Optimize ``model_path`` into ``output``; returns the report text."""
    original = load_model(model_path)
    inputs = check_inputs_for(original, frames=check_frames) if (check or check_each) else None
    names = resolve_passes(passes, skip, preset)
    if pad == 0:
        names = [n for n in names if n != "pad_dims"]
    options = {"pad_dims": {"multiple": pad}} if "pad_dims" in names else {}
    result = optimize(original, passes=names, check_each=check_each, check_inputs=inputs,
                      pass_options=options)
    lines = []
    for r in result.reports:
        lines.append(f"  {r.name:24} {r.summary}  ({r.seconds:.2f} s)")
    if check:
        outcome = compare_models(original, result.model, inputs)
        outcome.raise_if_failed("the optimized model")
        lines.append(f"check: {outcome.summary()}")
    save_model(result.model, output)
    before = graph_stats(original, file_size=os.path.getsize(model_path))
    after = graph_stats(result.model, file_size=os.path.getsize(output))
    return "\n".join([f"passes ({model_path} -> {output}):", *lines, "", format_comparison(before, after)])
