"""``waveopt optimize``: load, run the pass pipeline, check, save, and the before/after table."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from waveopt.check import compare_models, random_inputs
from waveopt.cli.files import parse_names, refuse_overwrite
from waveopt.cli.vocode import load_mels
from waveopt.errors import WaveoptError
from waveopt.graph import save_model
from waveopt.model_info import example_inputs, wavernn_info
from waveopt.passes import PASSES, PRESETS
from waveopt.pipeline import resolve_passes, run_passes
from waveopt.quant import DEFAULT_MIN_SNR_DB, ort_loop_kernels, quantize_checked
from waveopt.report import format_comparison, graph_stats
from waveopt.runtime import uses_native_ops
from waveopt.validate import load_valid_model, processing_invalid

__all__ = ["OptimizePlan", "optimize_command", "optimize_file", "plan_optimize", "run_plan", "check_inputs_for"]

PAD_MULTIPLES = (0, 16, 32)
DEFAULT_PAD = 16
QUANT_BITS = {"none": 0, "int8": 8, "int16": 16}


def list_passes(value: bool):
    """--list-passes: every registered pass and every preset, then exit."""
    if value:
        for name, cls in PASSES.items():
            typer.echo(f"{name:24} {cls.description}")
        for preset, names in PRESETS.items():
            typer.echo(f"preset {preset}: {', '.join(names)}")
        raise typer.Exit(0)


def optimize_command(
    model: Path = typer.Argument(..., help="The ONNX model to optimize (never modified)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Where to write the optimized model."),
    passes: Optional[str] = typer.Option(None, help="Comma-separated passes to run (default: the preset's)."),
    skip: Optional[str] = typer.Option(None, help="Comma-separated passes to leave out."),
    target: str = typer.Option("portable", help=f"A preset: {' or '.join(PRESETS)} (portable: standard ONNX ops; "
                               "native: the fused C++ op)."),
    pad: Optional[int] = typer.Option(None, help="pad_dims multiple: 16, 32 (AVX-512), or 0 to skip padding "
                                      "(portable target only) [default: 16]."),
    check: bool = typer.Option(False, "--check", help="Compare the result with the input in ORT."),
    check_each: bool = typer.Option(False, "--check-each", help="Check after every pass; name the one that breaks."),
    check_frames: int = typer.Option(8, help="Mel frames of the seeded check inputs."),
    quant: str = typer.Option("none", help="none, int8 or int16 (int16: native target only)."),
    calibrate: Optional[list[Path]] = typer.Option(
        None, help="Mel .npy files to calibrate and check quantization on (default: the demo mels); "
                   "list them after it: --calibrate a.npy b.npy."),
    more_calibrate: Optional[list[Path]] = typer.Argument(None, hidden=True),
    min_snr: Optional[float] = typer.Option(None, help="Refuse a quantized model whose teacher-forced logit "
                                            "SNR against float32 is under this many dB [default: 25]."),
    force: bool = typer.Option(False, "--force", help="Allow overwriting the input or an existing output, "
                               "and writing a quantized model under --min-snr."),
    list_passes: bool = typer.Option(False, "--list-passes", callback=list_passes, is_eager=True,
                                     help="List passes and presets, then exit."),
    allow_invalid: bool = typer.Option(False, "--allow-invalid",
                                       help="Work on a model that fails validation (onnx.checker, waveopt metadata, "
                                            "the Loop's interface)."),
):
    """Run the pass pipeline and print a before/after table."""
    if output is None:
        raise WaveoptError("missing -o/--output: where to write the optimized model")
    if more_calibrate and not calibrate:
        raise WaveoptError(f"unexpected argument {more_calibrate[0]} (only one model is optimized at a time)")
    calibration = [*(calibrate or []), *(more_calibrate or [])]
    plan = plan_optimize(passes=parse_names(passes), skip=parse_names(skip) or (), preset=target, pad=pad,
                         quant=quant, calibrate=calibration, min_snr=min_snr)
    refuse_overwrite(output, [model, *calibration], force, existing=False)
    typer.echo(run_plan(plan, model, output, check=check, check_each=check_each, check_frames=check_frames,
                        calibrate=calibration, force=force, allow_invalid=allow_invalid))


def check_inputs_for(model, frames: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs for checking ``model``: demo mels and noise for our exports, random otherwise."""
    if wavernn_info(model) is not None:
        return example_inputs(model, frames=frames, seed=seed)
    return random_inputs(model, seed=seed)


@dataclasses.dataclass(frozen=True)
class OptimizePlan:
    """optimize's options, checked: the pass names to run (resolved once), their options,
    the quantization bits (0: none) and the SNR floor."""

    names: list[str]
    pass_options: dict
    bits: int
    min_snr: float


def plan_optimize(*, passes=None, skip=(), preset="portable", pad=None, quant="none", calibrate=(),
                  min_snr=None) -> OptimizePlan:
    """Every check of optimize's options, in one place; one line of error for each."""
    if preset not in PRESETS:
        raise WaveoptError(f"--target must be {' or '.join(PRESETS)}, not {preset!r}")
    if pad is not None and pad not in PAD_MULTIPLES:
        raise WaveoptError(f"--pad must be 16, 32 or 0, not {pad}")
    bits = QUANT_BITS.get(quant)
    if bits is None:
        raise WaveoptError(f"--quant must be none, int8 or int16, not {quant!r}")
    if calibrate and not bits:
        raise WaveoptError("--calibrate is for quantization: add --quant int8 or --quant int16")
    if bits == 16 and preset != "native":
        raise WaveoptError("--quant int16 needs --target native (standard ONNX has no 16-bit integer MatMul)")
    min_snr = DEFAULT_MIN_SNR_DB if min_snr is None else min_snr
    if not math.isfinite(min_snr):
        raise WaveoptError(f"--min-snr must be a finite number of dB, not {min_snr}")
    names = resolve_passes(passes, skip, preset)
    if "quantize" in names:
        raise WaveoptError("the quantize pass runs through --quant int8|int16 (it is calibrated and checked "
                           "there); leave it out of --passes")
    if pad is not None and preset == "native" and "pad_dims" not in names:
        raise WaveoptError("--pad is for --target portable: the native target does not run pad_dims "
                           "(its op pads its own weights)")
    pad = DEFAULT_PAD if pad is None else pad
    if pad == 0:
        names = [n for n in names if n != "pad_dims"]
    options = {"pad_dims": {"multiple": pad}} if "pad_dims" in names else {}
    return OptimizePlan(names, options, bits, min_snr)


def optimize_file(model_path: Path, output: Path, *, passes=None, skip=(), preset="portable", pad=None,
                  check=False, check_each=False, check_frames=8, quant="none", calibrate=(),
                  min_snr=None, force=False, allow_invalid=False) -> str:
    """Optimize ``model_path`` into ``output``; returns the report text.

    With ``quant`` "int8" or "int16" the optimized float32 model is then quantized and
    measured (:mod:`waveopt.quant`) on the ``calibrate`` mel files (default: the demo
    mels); it is written only if its logit SNR is at least ``min_snr`` dB (default
    :data:`~waveopt.quant.DEFAULT_MIN_SNR_DB`), or with ``force``. The input is validated
    first (:mod:`waveopt.validate`) unless ``allow_invalid``.
    """
    plan = plan_optimize(passes=passes, skip=skip, preset=preset, pad=pad, quant=quant, calibrate=calibrate,
                         min_snr=min_snr)
    return run_plan(plan, model_path, output, check=check, check_each=check_each, check_frames=check_frames,
                    calibrate=calibrate, force=force, allow_invalid=allow_invalid)


def run_plan(plan: OptimizePlan, model_path: Path, output: Path, *, check=False, check_each=False,
             check_frames=8, calibrate=(), force=False, allow_invalid=False) -> str:
    """Run a checked plan on ``model_path``, write ``output``; returns the report text."""
    original = load_valid_model(model_path, allow_invalid)
    with processing_invalid(original, allow_invalid):
        return _run_loaded(plan, original, model_path, output, check, check_each, check_frames, calibrate, force)


def _run_loaded(plan, original, model_path, output, check, check_each, check_frames, calibrate, force) -> str:
    bits, min_snr = plan.bits, plan.min_snr
    calibration = _calibration_mels(original, calibrate) if bits else None
    inputs = check_inputs_for(original, frames=check_frames) if (check or check_each) else None
    result = run_passes(original, plan.names, check_each=check_each, check_inputs=inputs,
                        pass_options=plan.pass_options)
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
    if not paths:
        return None
    info = wavernn_info(model)
    if info is None:
        raise WaveoptError("quantization needs a waveopt-exported WaveRNN (its metadata says how to "
                           "feed it the calibration mels)")
    return [load_mels(Path(p), info) for p in paths]
