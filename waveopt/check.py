"""Numerical equivalence check of two models in onnxruntime, with the near-tie rule for samples.

Plain outputs must agree within ``atol + rtol * |reference|``. Sampled outputs
(autoregressive samples, layout [T, B], fed back into the model) must agree at every
step (exactly for integer samples, within ``atol`` for float ones), or else the first
disagreeing step k must be a near-tie: re-running the reference with the noise input
(layout [T, B, 2], uniforms) nudged at [k, b, j] by at most ``tie_eps`` (j = 0, 1) either
reproduces the candidate's sample at [k, b], or changes the reference's sample and brackets
the candidate's: an inverse-CDF draw is monotone in its uniform, and classes of near-zero
probability between the two bracketing draws (narrower than any nudge) are ordered by float
noise in the logits. The two runs then legitimately diverge after step k,
so outputs that disagree afterwards (e.g. a waveform) are reported as not compared.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from waveopt.errors import WaveoptError
from waveopt.graph import AnyModel, to_proto
from waveopt.runtime import run, session
from waveopt.validate import check_noise

__all__ = [
    "CheckFailed",
    "CheckResult",
    "DEFAULT_ATOL",
    "DEFAULT_RTOL",
    "OutputCheck",
    "check_sampled",
    "compare_models",
    "cpu_session",
    "random_inputs",
]

SAMPLED_OUTPUTS_KEY = "waveopt.sampled_outputs"
NOISE_INPUT_KEY = "waveopt.noise_input"
NOISE_LOW, NOISE_HIGH = 1e-5, 1 - 1e-5
# Default tolerances of plain outputs: |candidate - reference| <= ATOL + RTOL * |reference|.
DEFAULT_ATOL, DEFAULT_RTOL = 1e-4, 1e-3

SessionFactory = Callable[[onnx.ModelProto], ort.InferenceSession]


class CheckFailed(WaveoptError):
    """The candidate model's outputs differ from the reference's."""


@dataclasses.dataclass
class OutputCheck:
    """The comparison of one output."""

    name: str
    ok: bool
    max_abs_diff: float = 0.0
    max_rel_diff: float = 0.0
    compared: bool = True
    note: str = ""

    def describe(self) -> str:
        if not self.compared:
            return f"{self.name}: {self.note}"
        diffs = f"max abs diff {self.max_abs_diff:.3g}, max rel diff {self.max_rel_diff:.3g}"
        status = "ok" if self.ok else "MISMATCH"
        return f"{self.name}: {status}{', ' + self.note if self.note else ''} ({diffs})"


@dataclasses.dataclass
class CheckResult:
    """Per-output records; ``ok`` when every output passed (or was rightly not compared)."""

    outputs: list[OutputCheck]
    atol: float
    rtol: float

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outputs)

    def summary(self) -> str:
        verdict = "outputs match" if self.ok else "outputs differ"
        details = "; ".join(o.describe() for o in self.outputs)
        return f"{verdict} (atol {self.atol:g}, rtol {self.rtol:g}): {details}."

    def raise_if_failed(self, context: str = "") -> None:
        if not self.ok:
            raise CheckFailed(f"{context}: {self.summary()}" if context else self.summary())


def cpu_session(model: onnx.ModelProto) -> ort.InferenceSession:
    """A single-threaded onnxruntime CPU session, so runs are reproducible (the native op
    library registered for a model that uses it)."""
    return session(model, threads=1)


def compare_models(
    reference: AnyModel,
    candidate: AnyModel,
    inputs: Mapping[str, np.ndarray],
    *,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    sampled_outputs: Sequence[str] | None = None,
    noise_input: str | None = None,
    tie_eps: float = 1e-5,
    session_factory: SessionFactory | None = None,
) -> CheckResult:
    """Run both models on ``inputs`` and compare every output of the reference.

    ``sampled_outputs`` and ``noise_input`` default to the reference's metadata_props
    ``waveopt.sampled_outputs`` (comma-separated) and ``waveopt.noise_input``.
    """
    ref_proto = to_proto(reference)
    sampled, noise_input = _sampled_and_noise(ref_proto, sampled_outputs, noise_input)
    factory = session_factory or cpu_session
    ref_session, ref_out = _run_reference(factory, ref_proto, inputs)
    _check_request(ref_out, sampled, noise_input, inputs)
    try:
        cand_out = _run(factory(to_proto(candidate)), inputs)
    except Exception as e:
        note = f"the candidate failed to run: {_first_line(e)}"
        return CheckResult([OutputCheck(n, False, compared=False, note=note) for n in ref_out],
                           atol, rtol)

    def rerun_reference(noise: np.ndarray) -> dict[str, np.ndarray]:
        return _run(ref_session, {**inputs, noise_input: noise})

    noise = inputs.get(noise_input) if noise_input else None
    records, tie_step = _check_sampled_outputs(sampled, ref_out, cand_out, atol, noise, tie_eps, rerun_reference)
    for name in ref_out:
        if name in records:
            continue
        record = _check_plain(name, ref_out[name], cand_out.get(name), atol, rtol)
        if not record.ok and tie_step is not None:
            record = OutputCheck(name, True, compared=False, note=(
                f"not compared: the run diverged after the near-tie at step {tie_step}"))
        records[name] = record
    return CheckResult([records[n] for n in ref_out], atol, rtol)


def _sampled_and_noise(ref_proto: onnx.ModelProto, sampled_outputs: Sequence[str] | None,
                       noise_input: str | None) -> tuple[list[str], str | None]:
    """The sampled outputs and the noise input: as given, else from the reference's metadata."""
    metadata = {p.key: p.value for p in ref_proto.metadata_props}
    if sampled_outputs is None:
        sampled_outputs = [n.strip() for n in metadata.get(SAMPLED_OUTPUTS_KEY, "").split(",")]
    sampled = [n for n in sampled_outputs if n]
    return sampled, noise_input if noise_input is not None else metadata.get(NOISE_INPUT_KEY)


def _run_reference(factory: SessionFactory, ref_proto: onnx.ModelProto, inputs: Mapping[str, np.ndarray]):
    """(the reference's session, its outputs); a reference that cannot run is the caller's error."""
    try:
        ref_session = factory(ref_proto)
        return ref_session, _run(ref_session, inputs)
    except WaveoptError:
        raise
    except Exception as e:
        raise WaveoptError(f"the reference model failed to run: {_first_line(e)}") from e


def _check_request(ref_out: Mapping[str, np.ndarray], sampled: list[str], noise_input: str | None,
                   inputs: Mapping[str, np.ndarray]) -> None:
    """The sampled outputs exist and the noise input is given and valid, else WaveoptError."""
    for name in sampled:
        if name not in ref_out:
            raise WaveoptError(f"sampled output {name!r} is not an output of the model")
    if sampled and noise_input and noise_input not in inputs:
        raise WaveoptError(f"noise input {noise_input!r} is not among the given inputs")
    if noise_input and noise_input in inputs:
        check_noise(inputs[noise_input], f"input {noise_input!r}")


def _check_sampled_outputs(sampled: list[str], ref_out, cand_out, atol: float, noise: np.ndarray | None,
                           tie_eps: float, rerun_reference) -> tuple[dict[str, OutputCheck], int | None]:
    """The sampled outputs' checks, and the first step where a near-tie made a run diverge."""
    records: dict[str, OutputCheck] = {}
    tie_step: int | None = None
    for name in sampled:
        record, step = check_sampled(name, ref_out[name], cand_out.get(name), atol, noise, tie_eps,
                                     rerun_reference)
        records[name] = record
        if step is not None:
            tie_step = step if tie_step is None else min(tie_step, step)
    return records, tie_step


def _run(session: ort.InferenceSession, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    feeds = {}
    for arg in session.get_inputs():
        if arg.name not in inputs:
            raise WaveoptError(f"no value given for model input {arg.name!r}")
        feeds[arg.name] = inputs[arg.name]
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, run(session, names, feeds)))


def _diffs(ref: np.ndarray, cand: np.ndarray) -> tuple[float, float]:
    if ref.size == 0:
        return 0.0, 0.0
    r, c = ref.astype(np.float64), cand.astype(np.float64)
    both_nan = np.isnan(r) & np.isnan(c)
    abs_diff = np.where(both_nan, 0.0, np.abs(c - r))
    rel_diff = abs_diff / np.maximum(np.abs(r), 1e-12)
    return float(abs_diff.max()), float(rel_diff.max())


def _is_exact(array: np.ndarray) -> bool:
    return not np.issubdtype(array.dtype, np.inexact)


def _check_plain(name: str, ref: np.ndarray, cand: np.ndarray | None,
                 atol: float, rtol: float) -> OutputCheck:
    if cand is None:
        return OutputCheck(name, False, compared=False, note="missing from the candidate")
    if cand.shape != ref.shape:
        return OutputCheck(name, False, compared=False,
                           note=f"shape {list(cand.shape)} instead of {list(ref.shape)}")
    if _is_exact(ref):
        ok = bool(np.array_equal(ref, cand))
    else:
        ok = bool(np.allclose(cand, ref, rtol=rtol, atol=atol, equal_nan=True))
    return OutputCheck(name, ok, *_diffs(ref, cand))


def _sample_matches(ref: np.ndarray, cand: np.ndarray, atol: float) -> np.ndarray:
    if _is_exact(ref):
        return ref == cand
    return np.isclose(cand, ref, rtol=0.0, atol=atol, equal_nan=True)


def check_sampled(
    name: str, ref: np.ndarray, cand: np.ndarray | None, atol: float,
    noise: np.ndarray | None, tie_eps: float,
    rerun_reference: Callable[[np.ndarray], dict[str, np.ndarray]],
) -> tuple[OutputCheck, int | None]:
    """Compare samples [T, B] step by step; returns the record and the near-tie step."""
    if ref.ndim != 2:
        raise WaveoptError(f"sampled output {name!r} has shape {list(ref.shape)}, not [T, B]")
    if cand is None or cand.shape != ref.shape:
        return _check_plain(name, ref, cand, atol, 0.0), None
    steps = ref.shape[0]
    kind = "identical" if _is_exact(ref) else "equal within atol"
    mismatch = ~_sample_matches(ref, cand, atol)
    if not mismatch.any():
        return OutputCheck(name, True, *_diffs(ref, cand), note=f"{kind} for all {steps} steps"), None
    k = int(np.flatnonzero(mismatch.any(axis=1))[0])
    before = _diffs(ref[:k], cand[:k])
    batches = [int(b) for b in np.flatnonzero(mismatch[k])]
    where = f"step {k} (batch {', '.join(map(str, batches))})"
    if noise is None:
        return OutputCheck(name, False, *_diffs(ref, cand), note=(
            f"{kind} for {k} of {steps} steps, then differs at {where} "
            "(no noise input to test for a near-tie)")), None
    if noise.ndim != 3 or noise.shape[:2] != ref.shape:
        return OutputCheck(name, False, *_diffs(ref, cand), note=(
            f"{kind} for {k} of {steps} steps, then differs at {where} (noise shape "
            f"{list(noise.shape)} is not [T, B, 2] for samples {list(ref.shape)})")), None
    for b in batches:
        if not _is_near_tie(name, noise, k, b, cand[k, b], atol, tie_eps, rerun_reference):
            return OutputCheck(name, False, *_diffs(ref, cand), note=(
                f"{kind} for {k} of {steps} steps, then differs at {where}, "
                f"and a noise nudge of {tie_eps:g} does not reproduce it")), None
    return OutputCheck(name, True, *before, note=(
        f"{kind} for {k} of {steps} steps, then a near-tie at {where}, "
        "later steps not compared")), k


def _is_near_tie(
    name: str, noise: np.ndarray, k: int, b: int, wanted: np.ndarray, atol: float,
    tie_eps: float, rerun_reference: Callable[[np.ndarray], dict[str, np.ndarray]],
) -> bool:
    """Does nudging noise[k, b, j] by at most tie_eps make the reference draw ``wanted``, or
    draw samples on both sides of it (see the module docstring)?

    Nudges of tie_eps, tie_eps/10 and tie_eps/100 each way: a nudge of the full tie_eps
    can jump past a very narrow class to the one beyond it.
    """
    for j in range(min(2, noise.shape[2])):
        drawn = {}
        for size, sign in itertools.product((1.0, 0.1, 0.01), (1.0, -1.0)):
            nudged = noise.copy()
            nudged[k, b, j] = np.clip(noise[k, b, j] + sign * size * tie_eps, NOISE_LOW, NOISE_HIGH)
            drawn[sign * size] = sample = np.asarray(rerun_reference(nudged)[name][k, b])
            if _sample_matches(sample, np.asarray(wanted), atol):
                return True
        low, high = sorted((float(drawn[-1.0]), float(drawn[1.0])))
        if low < high and low - atol <= float(wanted) <= high + atol:
            return True
    return False


def random_inputs(
    model: AnyModel, seed: int = 0, dims: Mapping[str, int] | None = None
) -> dict[str, np.ndarray]:
    """Seeded inputs: floats ~ N(0, 1), the noise input ~ U(1e-5, 1 - 1e-5), integers 0.

    Symbolic dims take their size from ``dims`` (by dim name), else 1.
    """
    proto = to_proto(model)
    dims = dict(dims or {})
    noise = {p.key: p.value for p in proto.metadata_props}.get(NOISE_INPUT_KEY)
    initializers = {t.name for t in proto.graph.initializer}
    rng = np.random.default_rng(seed)
    values = {}
    for vi in proto.graph.input:
        if vi.name in initializers:
            continue
        shape = _input_shape(vi, dims)
        dtype = _input_dtype(vi)
        if vi.name == noise:
            values[vi.name] = rng.uniform(NOISE_LOW, NOISE_HIGH, shape).astype(dtype)
        elif np.issubdtype(dtype, np.floating):
            values[vi.name] = rng.standard_normal(shape).astype(dtype)
        else:
            values[vi.name] = np.zeros(shape, dtype)
    return values


def _input_shape(vi: onnx.ValueInfoProto, dims: Mapping[str, int]) -> list[int]:
    tensor_type = vi.type.tensor_type
    if not tensor_type.HasField("shape"):
        raise WaveoptError(f"input {vi.name!r} has no shape; cannot make a value for it")
    shape = []
    for axis, dim in enumerate(tensor_type.shape.dim):
        if dim.HasField("dim_value"):
            shape.append(dim.dim_value)
        elif dim.dim_param:
            shape.append(int(dims.get(dim.dim_param, 1)))
        else:
            raise WaveoptError(
                f"input {vi.name!r} has a dim of unknown size (axis {axis}); "
                "give the input a value or name the dim"
            )
    return shape


def _input_dtype(vi: onnx.ValueInfoProto) -> np.dtype:
    if not vi.type.HasField("tensor_type"):
        raise WaveoptError(f"input {vi.name!r} is not a tensor; cannot make a value for it")
    elem_type = vi.type.tensor_type.elem_type
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:
        dtype = None
    if dtype is None or dtype.kind not in "fiub":
        name = onnx.TensorProto.DataType.Name(elem_type)
        raise WaveoptError(f"input {vi.name!r} has type {name}; cannot make a value for it")
    return dtype


def _first_line(e: BaseException) -> str:
    return (" ".join(str(e).split()) or type(e).__name__)[:300]
