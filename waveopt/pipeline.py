"""Run a list of passes over a model, optionally checking the outputs after each pass."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, Generic, TypeVar

import numpy as np
import onnx
import onnx_ir as ir

from waveopt.check import CheckFailed, compare_models, random_inputs
from waveopt.errors import WaveoptError
from waveopt.passes import PRESETS, WaveoptPass, get_pass
from waveopt.progress import stage

__all__ = ["OptimizeResult", "PassReport", "optimize", "resolve_passes", "run_passes"]

ModelT = TypeVar("ModelT", onnx.ModelProto, ir.Model)


@dataclasses.dataclass
class PassReport:
    """What one pass did."""

    name: str
    modified: bool
    summary: str
    seconds: float
    check: str | None = None  # with check_each: what the check after this pass found


@dataclasses.dataclass
class OptimizeResult(Generic[ModelT]):
    """The optimized model (same type as given) and one report per pass run."""

    model: ModelT
    reports: list[PassReport]

    @property
    def modified(self) -> bool:
        return any(r.modified for r in self.reports)


def resolve_passes(
    passes: Iterable[str] | None = None, skip: Iterable[str] = (), preset: str = "portable"
) -> list[str]:
    """The pass names to run: ``passes`` (or the ``preset``'s) minus ``skip``, all checked."""
    if passes is None:
        if preset not in PRESETS:
            known = ", ".join(sorted(PRESETS))
            raise WaveoptError(f"unknown preset {preset!r} (known presets: {known})")
        passes = PRESETS[preset]
    names, skip = list(passes), list(skip)
    for name in [*names, *skip]:
        get_pass(name)
    return [n for n in names if n not in skip]


def optimize(
    model: ModelT,
    passes: Iterable[str] | None = None,
    skip: Iterable[str] = (),
    preset: str = "portable",
    check_each: bool = False,
    check_inputs: Mapping[str, np.ndarray] | None = None,
    check_options: Mapping[str, Any] | None = None,
    pass_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> OptimizeResult[ModelT]:
    """Run the passes on a copy of ``model``; the caller's object is never modified.

    ``pass_options`` gives a pass its constructor arguments by name, e.g.
    ``{"pad_dims": {"multiple": 32}}``.

    With ``check_each``, every pass that changed the model is followed by
    :func:`waveopt.check.compare_models` against the original model on
    ``check_inputs`` (default: :func:`waveopt.check.random_inputs`), and the first
    mismatch raises :class:`CheckFailed` naming the pass; each report's ``check`` says
    what the check after its pass found (max abs/rel diffs, sampled agreement).
    """
    return run_passes(model, resolve_passes(passes, skip, preset), check_each=check_each, check_inputs=check_inputs,
                      check_options=check_options, pass_options=pass_options)


def run_passes(
    model: ModelT,
    names: list[str],
    check_each: bool = False,
    check_inputs: Mapping[str, np.ndarray] | None = None,
    check_options: Mapping[str, Any] | None = None,
    pass_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> OptimizeResult[ModelT]:
    """:func:`optimize` for pass names already resolved (:func:`resolve_passes`)."""
    options = dict(pass_options or {})
    unused = set(options) - set(names)
    if unused:
        raise WaveoptError(f"options given for passes that do not run: {', '.join(sorted(unused))}")
    instances: list[WaveoptPass] = [get_pass(n)(**options.get(n, {})) for n in names]
    if isinstance(model, ir.Model):
        original = ir.serde.serialize_model(model)
    else:
        original = onnx.ModelProto()
        original.CopyFrom(model)
    work = ir.serde.deserialize_model(_copy(original))

    checks: dict[int, str] = {}
    if check_each:
        inputs = dict(check_inputs) if check_inputs is not None else random_inputs(original)
        for i, p in enumerate(instances):
            with stage(f"pass {p.name}"):
                p(work)
            if p.modified:
                candidate = ir.serde.serialize_model(work)
                with stage(f"checking after {p.name}"):
                    result = compare_models(original, candidate, inputs, **(check_options or {}))
                if not result.ok:
                    raise CheckFailed(f"pass {p.name!r} broke the graph: {result.summary()}")
                checks[i] = result.summary()
    else:
        for p in instances:  # one at a time, as PassManager(instances, steps=1) would, to report progress
            with stage(f"pass {p.name}"):
                try:
                    ir.passes.PassManager([p], steps=1, early_stop=False)(work)
                except ir.passes.PassError as e:
                    raise _user_error(e) or e

    reports = [PassReport(p.name, p.modified, p.summary, p.seconds, checks.get(i)) for i, p in enumerate(instances)]
    if isinstance(model, ir.Model):
        return OptimizeResult(work, reports)
    changed = any(r.modified for r in reports)
    return OptimizeResult(ir.serde.serialize_model(work) if changed else original, reports)


def _copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    return copy


def _user_error(error: BaseException) -> WaveoptError | None:
    """The WaveoptError a PassManager wrapped, if any."""
    while error is not None:
        if isinstance(error, WaveoptError):
            return error
        error = error.__cause__
    return None
