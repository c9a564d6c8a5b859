"""``waveopt optimize``: load, run the pass pipeline, check, save, and the before/after table."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from .check import compare_models, random_inputs
from .errors import WaveoptError
from .graph import load_model, save_model
from .model_info import example_inputs, wavernn_info
from .pipeline import optimize, resolve_passes
from .quantizing import DEFAULT_MIN_SNR_DB, ort_loop_kernels, quantize_checked
from .runtime import uses_native_ops
from .report import format_comparison, graph_stats

__all__ = ["optimize_file", "check_inputs_for"]


def check_inputs_for(model, frames: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs for checking ``model``: demo mels and noise for our exports, random otherwise."""
    if wavernn_info(model) is not None:
        return example_inputs(model, frames=frames, seed=seed)
    return random_inputs(model, seed=seed)


def optimize_file(model_path: Path, output: Path, *, passes=None, skip=(), preset="portable", pad=16,
                  check=False, check_each=False, check_frames=8, quant="none", calibrate=(),
                  min_snr=None, force=False) -> str:
    """Optimize ``model_path`` into ``output``; returns the report text.

    With ``quant`` "int8" or "int16" the optimized float32 model is then quantized and
    measured (:mod:`waveopt.quantizing`) on the ``calibrate`` mel files (default: the demo
    mels); it is written only if its logit SNR is at least ``min_snr`` dB (default
    :data:`~waveopt.quantizing.DEFAULT_MIN_SNR_DB`), or with ``force``.
    """
    min_snr = DEFAULT_MIN_SNR_DB if min_snr is None else min_snr
    bits = {"none": 0, "int8": 8, "int16": 16}.get(quant)
    if bits is None:
        raise WaveoptError(f"--quant must be none, int8 or int16, not {quant!r}")
    if calibrate and not bits:
        raise WaveoptError("--calibrate is for quantization: add --quant int8 or --quant int16")
    if bits == 16 and preset != "native":
        raise WaveoptError("--quant int16 needs --target native (standard ONNX has no 16-bit integer MatMul)")
    if not math.isfinite(min_snr):
        raise WaveoptError(f"--min-snr must be a finite number of dB, not {min_snr}")
    original = load_model(model_path)
    calibration = _calibration_mels(original, calibrate) if bits else None
    inputs = check_inputs_for(original, frames=check_frames) if (check or check_each) else None
    names = resolve_passes(passes, skip, preset)
    if "quantize" in names:
        raise WaveoptError("the quantize pass runs through --quant int8|int16 (it is calibrated and checked "
                           "there); leave it out of --passes")
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
    final = result.model
    if bits:
        final, accuracy, report = quantize_checked(result.model, bits, calibration)
        lines.append(f"  {report.name:24} {report.summary}  ({report.seconds:.2f} s)")
        if not uses_native_ops(final):
            lines.append(f"  {ort_loop_kernels(final)}")
        lines += ["", *accuracy.lines()]
        if accuracy.logit_snr_db < min_snr:
            verdict = (f"int{bits} logit SNR {accuracy.logit_snr_db:.1f} dB is under --min-snr {min_snr:g} dB")
            if not force:
                raise WaveoptError(f"not written: {verdict} (calibrate with --calibrate on real mels, try "
                                   f"int16, or write it anyway with --force)")
            lines.append(f"written anyway (--force): {verdict}")
    save_model(final, output)
    before = graph_stats(original, file_size=os.path.getsize(model_path))
    after = graph_stats(final, file_size=os.path.getsize(output))
    return "\n".join([f"passes ({model_path} -> {output}):", *lines, "", format_comparison(before, after)])


def _calibration_mels(model, paths) -> list[np.ndarray] | None:
    """The mels of the --calibrate files (checked like vocode's), or None for the demo mels."""
    from .vocoding import load_mels

    if not paths:
        return None
    info = wavernn_info(model)
    if info is None:
        raise WaveoptError("quantization needs a waveopt-exported WaveRNN (its metadata says how to "
                           "feed it the calibration mels)")
    return [load_mels(Path(p), info) for p in paths]
