"""``waveopt optimize``: load, run the pass pipeline, check, save, and the before/after table."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Optional

import numpy as np
import onnx
import typer

from waveopt.check import DEFAULT_ATOL, DEFAULT_RTOL, CheckResult, compare_models, random_inputs
from waveopt.cli.common import (ListOptionCommand, allow_invalid_option, batch_option, emit_json, json_option,
                                progress_for, quiet_option, split_list)
from waveopt.cli.files import parse_names, refuse_overwrite
from waveopt.errors import WaveoptError
from waveopt.graph import save_model
from waveopt.mel_files import load_mels
from waveopt.model_info import example_inputs, wavernn_info
from waveopt.passes import PASSES, PRESETS
from waveopt.pipeline import PassReport, resolve_passes, run_passes
from waveopt.profile.inputs import load_npz_inputs
from waveopt.progress import stage
from waveopt.quant import DEFAULT_MIN_SNR_DB, QuantAccuracy, ort_loop_kernels, quantize_checked
from waveopt.report import GraphStats, format_comparison, graph_stats
from waveopt.runtime import uses_native_ops
from waveopt.validate import load_valid_model, processing_invalid

__all__ = ["OptimizeCommand", "OptimizeOutcome", "OptimizePlan", "optimize_command", "optimize_file", "plan_optimize",
           "run_plan", "check_inputs_for", "given_check_inputs"]

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


class OptimizeCommand(ListOptionCommand):
    """optimize's command: ``--calibrate a.npy b.npy`` (the documented form) reads as repeated --calibrate."""

    list_options = {"--calibrate": (".npy", ".npz")}


def optimize_command(
    model: Path = typer.Argument(..., metavar="MODEL", help="The ONNX model to optimize (never modified)."),
    output_arg: Optional[Path] = typer.Argument(None, metavar="OUTPUT",
                                                help="Where to write the optimized model (or -o OUTPUT)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Where to write the optimized model."),
    passes: Optional[str] = typer.Option(None, help="Comma-separated passes to run (default: the preset's)."),
    skip: Optional[str] = typer.Option(None, "--skip-passes", "--skip", help="Comma-separated passes to leave out."),
    target: str = typer.Option("portable", help=f"A preset: {' or '.join(PRESETS)} (portable: standard ONNX ops; "
                               "native: the fused C++ op)."),
    pad: Optional[int] = typer.Option(None, help="pad_dims multiple: 16, 32 (AVX-512), or 0 to skip padding "
                                      f"(portable target only) [default: {DEFAULT_PAD}]."),
    check: bool = typer.Option(False, "--check", help="Compare the result with the input in ORT."),
    check_each: bool = typer.Option(False, "--check-each", help="Check after every pass; name the one that breaks."),
    atol: float = typer.Option(DEFAULT_ATOL, help="Absolute tolerance of --check/--check-each."),
    rtol: float = typer.Option(DEFAULT_RTOL, help="Relative tolerance of --check/--check-each "
                               "(pass: |result - input's| <= atol + rtol * |input's|)."),
    check_inputs: Optional[Path] = typer.Option(
        None, "--check-inputs", metavar="NPZ",
        help="Check on these inputs: an .npz of arrays named as the model's inputs (default: seeded ones)."),
    frames: int = typer.Option(8, "--frames", "--check-frames", help="Mel frames of the seeded check inputs."),
    batch: int = batch_option(help="Utterances of the seeded check inputs (unfolded waveopt exports)."),
    quant: str = typer.Option("none", help="none, int8 or int16 (int16: native target only)."),
    calibrate: Optional[list[str]] = typer.Option(
        None, "--calibrate", metavar="MELS",
        help="Mel .npy files to calibrate and check quantization on (default: the demo mels): "
             "repeat it or give a comma list (--calibrate a.npy,b.npy; --calibrate a.npy b.npy works too)."),
    min_snr: float = typer.Option(DEFAULT_MIN_SNR_DB, help="Refuse a quantized model whose teacher-forced logit "
                                  "SNR against float32 is under this many dB."),
    force: bool = typer.Option(False, "--force", help="Allow overwriting the input or an existing output, "
                               "and writing a quantized model under --min-snr."),
    as_json: bool = json_option(),
    quiet: bool = quiet_option(),
    list_passes: bool = typer.Option(False, "--list-passes", callback=list_passes, is_eager=True,
                                     help="List passes and presets, then exit."),
    allow_invalid: bool = allow_invalid_option(),
):
    """Run the pass pipeline and print a before/after table (optimize MODEL OUTPUT, or MODEL -o OUTPUT)."""
    if output is not None and output_arg is not None:
        raise WaveoptError(f"two outputs: {output_arg} and -o {output}; give one")
    output = output if output is not None else output_arg
    if output is None:
        raise WaveoptError("missing -o/--output: where to write the optimized model")
    calibration = [Path(p) for p in split_list(calibrate)]
    plan = plan_optimize(passes=parse_names(passes), skip=parse_names(skip) or (), preset=target, pad=pad,
                         quant=quant, calibrate=calibration, min_snr=min_snr, atol=atol, rtol=rtol,
                         checks=check or check_each, check_inputs=check_inputs)
    refuse_overwrite(output, [model, *calibration, *([check_inputs] if check_inputs else [])], force,
                     existing=False)
    with progress_for(quiet, as_json):
        outcome = run_plan(plan, model, output, check=check, check_each=check_each, check_frames=frames,
                           check_batch=batch, check_inputs=check_inputs, calibrate=calibration, force=force,
                           allow_invalid=allow_invalid)
    if as_json:
        emit_json(outcome.as_dict())
    else:
        typer.echo(outcome.text())


def check_inputs_for(model, frames: int = 8, seed: int = 0, batch: int = 1) -> dict[str, np.ndarray]:
    """Seeded inputs for checking ``model``: demo mels and noise for our exports, random otherwise."""
    if wavernn_info(model) is not None:
        return example_inputs(model, frames=frames, batch=batch, seed=seed)
    return random_inputs(model, seed=seed)


def given_check_inputs(model, path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz named by the model's inputs (``--check-inputs``): every input, right dtype."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = {i.name: i for i in model.graph.input if i.name not in initializers}
    feed = load_npz_inputs(path, list(inputs))
    missing = [n for n in inputs if n not in feed]
    if missing:
        raise WaveoptError(f"{path} lacks the model's input {missing[0]!r} (inputs: {', '.join(inputs)})")
    for name, value in inputs.items():
        wanted = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        if feed[name].dtype != wanted:
            raise WaveoptError(f"{path}: input {name!r} is {feed[name].dtype}, the model takes {wanted}")
    return feed


@dataclasses.dataclass
class OptimizeOutcome:
    """What ``waveopt optimize`` did: the passes, the check, the quantization guard, before/after."""

    model_path: Path
    output: Path
    passes: list[PassReport]
    check: CheckResult | None
    quant: PassReport | None
    accuracy: QuantAccuracy | None
    forced: str | None  # the verdict a quantized model was written despite (--force)
    before: GraphStats
    after: GraphStats
    quant_kernels: str = ""  # which ORT kernels run a portable quantized loop
    check_source: str = ""  # the --check-inputs file, or "seeded"
    check_shapes: dict = dataclasses.field(default_factory=dict)  # input name -> shape checked on

    def text(self) -> str:
        lines, checked_each = [], any(r.check for r in self.passes)  # --check-each ran
        for r in self.passes:
            lines.append(f"  {r.name:24} {r.summary}  ({r.seconds:.2f} s)")
            if checked_each:
                lines.append(f"  {'':24} check: {r.check}" if r.check else f"  {'':24} check: unchanged, nothing to check")
        if self.check is not None:
            shapes = ", ".join(f"{k} {v}" for k, v in self.check_shapes.items())
            lines += [f"check: {self.check.summary()}", f"  checked on {self.check_source} inputs: {shapes}"]
        if self.quant is not None:
            lines.append(f"  {self.quant.name:24} {self.quant.summary}  ({self.quant.seconds:.2f} s)")
            if self.quant_kernels:
                lines.append(f"  {self.quant_kernels}")
            lines += ["", *self.accuracy.lines()]
        if self.forced:
            lines.append(f"written anyway (--force): {self.forced}")
        return "\n".join([f"passes ({self.model_path} -> {self.output}):", *lines, "",
                          format_comparison(self.before, self.after)])

    def as_dict(self) -> dict:
        return {
            "input": str(self.model_path), "output": str(self.output),
            "passes": [dataclasses.asdict(r) for r in self.passes],
            "check": None if self.check is None else {
                "ok": self.check.ok, "atol": self.check.atol, "rtol": self.check.rtol,
                "inputs": {"source": self.check_source, "shapes": self.check_shapes},
                "outputs": [dataclasses.asdict(o) for o in self.check.outputs]},
            "quantization": None if self.quant is None else {
                **dataclasses.asdict(self.accuracy), "report": dataclasses.asdict(self.quant),
                "written_despite_min_snr": self.forced is not None},
            "before": self.before.as_dict(), "after": self.after.as_dict(),
        }


@dataclasses.dataclass(frozen=True)
class OptimizePlan:
    """optimize's options, checked: the pass names to run (resolved once), their options,
    the quantization bits (0: none) and the SNR floor."""

    names: list[str]
    pass_options: dict
    bits: int
    min_snr: float
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL


def plan_optimize(*, passes=None, skip=(), preset="portable", pad=None, quant="none", calibrate=(),
                  min_snr=None, atol=DEFAULT_ATOL, rtol=DEFAULT_RTOL, checks=False, check_inputs=None) -> OptimizePlan:
    """Every check of optimize's options, in one place; one line of error for each."""
    for name, value in (("--atol", atol), ("--rtol", rtol)):
        if not (math.isfinite(value) and value >= 0):
            raise WaveoptError(f"{name} must be a finite number >= 0, not {value}")
    if check_inputs is not None and not checks:
        raise WaveoptError("--check-inputs is for checking: add --check or --check-each")
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
    return OptimizePlan(names, options, bits, min_snr, atol, rtol)


def optimize_file(model_path: Path, output: Path, *, passes=None, skip=(), preset="portable", pad=None,
                  check=False, check_each=False, check_frames=8, check_batch=1, check_inputs=None,
                  atol=DEFAULT_ATOL, rtol=DEFAULT_RTOL, quant="none", calibrate=(), min_snr=None,
                  force=False, allow_invalid=False) -> OptimizeOutcome:
    """Optimize ``model_path`` into ``output``; returns what was done (``.text()``, ``.as_dict()``).

    The check runs on ``check_inputs`` (an .npz of the model's inputs by name) or on seeded
    inputs of ``check_frames`` x ``check_batch``, within ``atol`` + ``rtol`` * |reference|.
    With ``quant`` "int8" or "int16" the optimized float32 model is then quantized and
    measured (:mod:`waveopt.quant`) on the ``calibrate`` mel files (default: the demo
    mels); it is written only if its logit SNR is at least ``min_snr`` dB (default
    :data:`~waveopt.quant.DEFAULT_MIN_SNR_DB`), or with ``force``. The input is validated
    first (:mod:`waveopt.validate`) unless ``allow_invalid``.
    """
    plan = plan_optimize(passes=passes, skip=skip, preset=preset, pad=pad, quant=quant, calibrate=calibrate,
                         min_snr=min_snr, atol=atol, rtol=rtol, checks=check or check_each,
                         check_inputs=check_inputs)
    return run_plan(plan, model_path, output, check=check, check_each=check_each, check_frames=check_frames,
                    check_batch=check_batch, check_inputs=check_inputs, calibrate=calibrate, force=force,
                    allow_invalid=allow_invalid)


def run_plan(plan: OptimizePlan, model_path: Path, output: Path, *, check=False, check_each=False,
             check_frames=8, check_batch=1, check_inputs=None, calibrate=(), force=False,
             allow_invalid=False) -> OptimizeOutcome:
    """Run a checked plan on ``model_path`` (validated first unless ``allow_invalid``), write
    ``output``; returns what was done."""
    with stage(f"loading {model_path}"):
        original = load_valid_model(model_path, allow_invalid)
    with processing_invalid(original, allow_invalid):
        return _run_loaded(plan, original, model_path, output, check=check, check_each=check_each,
                           check_frames=check_frames, check_batch=check_batch, check_inputs=check_inputs,
                           calibrate=calibrate, force=force)


def _run_loaded(plan: OptimizePlan, original: onnx.ModelProto, model_path: Path, output: Path, *, check,
                check_each, check_frames, check_batch, check_inputs, calibrate, force) -> OptimizeOutcome:
    bits, min_snr = plan.bits, plan.min_snr
    calibration = _calibration_mels(original, calibrate) if bits else None
    inputs = None
    if check_inputs is not None:
        inputs = given_check_inputs(original, Path(check_inputs))
    elif check or check_each:
        inputs = check_inputs_for(original, frames=check_frames, batch=check_batch)
    result = run_passes(original, plan.names, check_each=check_each, check_inputs=inputs,
                        check_options={"atol": plan.atol, "rtol": plan.rtol}, pass_options=plan.pass_options)
    outcome = None
    if check:
        with stage("checking the result against the input in ONNX Runtime"):
            outcome = compare_models(original, result.model, inputs, atol=plan.atol, rtol=plan.rtol)
        outcome.raise_if_failed("the optimized model")
    final, accuracy, report, forced, kernels = result.model, None, None, None, ""
    if bits:
        final, accuracy, report = quantize_checked(result.model, bits, calibration)
        if not uses_native_ops(final):
            kernels = ort_loop_kernels(final)
        if accuracy.logit_snr_db < min_snr:
            verdict = (f"int{bits} logit SNR {accuracy.logit_snr_db:.1f} dB is under --min-snr {min_snr:g} dB")
            if not force:
                raise WaveoptError(f"not written: {verdict} (calibrate with --calibrate on real mels, try "
                                   f"int16, or write it anyway with --force)")
            forced = verdict
    with stage(f"writing {output}"):
        save_model(final, output)
    before = graph_stats(original, file_size=os.path.getsize(model_path), frames=check_frames)
    after = graph_stats(final, file_size=os.path.getsize(output), frames=check_frames)
    return OptimizeOutcome(Path(model_path), Path(output), result.reports, outcome, report, accuracy, forced,
                           before, after, quant_kernels=kernels,
                           check_source=str(check_inputs) if check_inputs is not None else "seeded",
                           check_shapes={k: list(v.shape) for k, v in (inputs or {}).items()})


def _calibration_mels(model, paths) -> list[np.ndarray] | None:
    """The mels of the --calibrate files (checked like vocode's), or None for the demo mels."""
    if not paths:
        return None
    info = wavernn_info(model)
    if info is None:
        raise WaveoptError("quantization needs a waveopt-exported WaveRNN (its metadata says how to "
                           "feed it the calibration mels)")
    return [load_mels(Path(p), info) for p in paths]
