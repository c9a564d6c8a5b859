"""``waveopt optimize --quant``: calibrate, quantize, and measure against the float32 model.

1. Calibration (native target): the float32 model runs on the calibration mels with
   WAVEOPT_ACT_STATS set, and WaveRNNLoop reports the largest relu(fc1) and relu(fc2)
   outputs it saw; those become the op's ``act_ranges`` (the GRU states need none: they are
   bounded by tanh). The portable target quantizes activations dynamically, per step.
2. The ``quantize`` pass rewrites the model (int8, or int16 on the native target).
3. The guard, on the same mels and noise: teacher-forced logits of both models from the same
   history (the float32 model's own samples, through ``teacher_forced_variant``), giving the
   logit SNR and the agreement of the argmax class (RAW) or the sampled value (MOL); and the
   log-mel distance between both models' free-running audio from the same noise, next to
   the distance between two float32 runs with different noise (what sampling alone does).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from collections.abc import Sequence

import numpy as np
import onnx

from waveopt.demo_data import demo_mels, uniform_noise
from waveopt.errors import WaveoptError
from waveopt.model_info import WaveRNNInfo, wavernn_info
from waveopt.passes import ort_loop_body_op_types
from waveopt.pipeline import optimize
from waveopt.quant.accuracy import (
    MOL_TOLERANCE,
    class_agreement,
    log_mel_distance,
    logit_powers,
    sample_agreement,
    snr_db,
)
from waveopt.quant.teacher_forcing import PREV_SAMPLES, teacher_forced_variant
from waveopt.progress import stage
from waveopt.runtime import session, uses_native_ops

__all__ = ["DEFAULT_MIN_SNR_DB", "QuantAccuracy", "calibrate_ranges", "default_calibration_mels",
           "ort_loop_kernels", "quantize_checked"]

INTEGER_KERNELS = ("DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulInteger", "QLinearMatMul")

# The default --min-snr. Measured on the fatchord-size demo model, demo mels (README,
# scripts/bench_quant.py, scripts/guard_sweep.py): int16 ~65 dB, int8 35-38 dB (native and
# portable), with >= 98 % argmax agreement and a log-mel distance under 0.5 dB. Clipping
# relu(fc1)/relu(fc2) at half their calibrated range gives 19 dB, 91 % agreement and
# 1.4 dB: the first degradation worth refusing. 25 dB sits between the two, 10 dB under
# what a sound int8 model measures.
DEFAULT_MIN_SNR_DB = 25.0
DEFAULT_CALIBRATION_FRAMES = 40
STATS_ENV = "WAVEOPT_ACT_STATS"


@dataclasses.dataclass
class QuantAccuracy:
    """The guard's measures of a quantized model against its float32 source."""

    bits: int
    mode: str  # "raw" or "mol"
    steps: int
    logit_snr_db: float
    agreement: float  # argmax class (RAW) or sampled value within MOL_TOLERANCE (MOL)
    log_mel_db: float  # float32 vs quantized, same noise
    log_mel_noise_db: float  # float32 vs float32 with other noise
    act_ranges: list[float] | None

    def lines(self) -> list[str]:
        what = "argmax class agrees" if self.mode == "raw" else f"sampled value agrees (±{MOL_TOLERANCE:g})"
        ranges = (f"; calibrated act_ranges relu(fc1) <= {self.act_ranges[0]:.4g}, relu(fc2) <= "
                  f"{self.act_ranges[1]:.4g}" if self.act_ranges else "")
        return [
            f"int{self.bits} vs float32 on the calibration mels ({self.steps} steps){ranges}:",
            f"  teacher-forced logit SNR   {self.logit_snr_db:7.2f} dB",
            f"  {what:26} {100 * self.agreement:7.2f} % of steps",
            (f"  log-mel distance           {self.log_mel_db:7.2f} dB "
             f"(float32 with other noise: {self.log_mel_noise_db:.2f} dB)"),
        ]


def default_calibration_mels(info: WaveRNNInfo) -> list[np.ndarray]:
    """The demo mels, [1, feat, frames]."""
    return [demo_mels(DEFAULT_CALIBRATION_FRAMES, feat_dims=info.feat_dims, seed=0)]


def calibrate_ranges(model: onnx.ModelProto, mels: Sequence[np.ndarray], seed: int = 0) -> list[float]:
    """[largest relu(fc1), largest relu(fc2)] of the model's WaveRNNLoop over ``mels``."""
    info = _info(model)
    fc1 = fc2 = 0.0
    for i, m in enumerate(mels):
        for record in _loop_stats(model, _free_feed(info, m, seed + i)):
            fc1, fc2 = max(fc1, record["fc1_max"]), max(fc2, record["fc2_max"])
    if not (fc1 > 0 and fc2 > 0):
        raise WaveoptError("calibration saw no positive relu(fc1)/relu(fc2) output; "
                           "give mels of real speech with --calibrate")
    return [float(fc1), float(fc2)]


def quantize_checked(model: onnx.ModelProto, bits: int, mels: Sequence[np.ndarray] | None = None,
                     seed: int = 0, act_ranges: Sequence[float] | None = None):
    """Quantize ``model`` (float32, free-running, optimized for its target) and measure it.

    Returns (quantized model, QuantAccuracy, the pass report). ``act_ranges`` overrides the
    calibrated ranges (native target; tests use it to make a badly calibrated model).
    """
    info = _info(model)
    if bits not in (8, 16):
        raise WaveoptError(f"quantization is int8 or int16, not int{bits}")
    native = uses_native_ops(model)
    if bits == 16 and not native:
        raise WaveoptError("int16 needs the native target (standard ONNX has no 16-bit integer MatMul); "
                           "use --target native or --quant int8")
    mels = list(mels) if mels else default_calibration_mels(info)
    ranges = None
    if native and any(n.op_type == "WaveRNNLoop" for n in model.graph.node):
        with stage("calibrating activation ranges on the float32 model"):
            ranges = list(act_ranges) if act_ranges is not None else calibrate_ranges(model, mels, seed)
    options = {"quantize": {"bits": bits, "act_ranges": ranges}}
    result = optimize(model, passes=["quantize"], pass_options=options)
    quantized = result.model
    twin = teacher_forced_variant(model)
    twin_q = optimize(twin, passes=["quantize"], pass_options=options).model
    with stage(f"the guard: int{bits} against float32 on the calibration mels"):
        accuracy = _measure(model, quantized, twin, twin_q, info, mels, seed, bits, ranges)
    return quantized, accuracy, result.reports[0]


def ort_loop_kernels(model: onnx.ModelProto) -> str:
    """What ONNX Runtime runs for the products in the Loop body after its own fusions."""
    counts = ort_loop_body_op_types(model)
    integer = [f"{counts[op]} {op}" for op in INTEGER_KERNELS if counts[op]]
    floats = sum(counts[op] for op in ("MatMul", "Gemm", "FusedMatMul", "FusedGemm"))
    return (f"ONNX Runtime runs in the Loop body: {', '.join(integer) or 'no integer kernels'}"
            f"; float products left: {floats}")


def _measure(model, quantized, twin, twin_q, info, mels, seed, bits, ranges) -> QuantAccuracy:
    sessions = {name: session(m) for name, m in
                (("fp", model), ("q", quantized), ("tf_fp", twin), ("tf_q", twin_q))}
    signal = noise_power = 0.0
    agree = steps = 0.0
    mel_q = mel_noise = 0.0
    for i, m in enumerate(mels):
        feed = _free_feed(info, m, seed + i)
        samples, wave = sessions["fp"].run(["samples", "wave"], feed)
        wave_q = sessions["q"].run(["wave"], feed)[0]
        other = dict(feed, noise=uniform_noise(*feed["noise"].shape[:2], seed=seed + i + 1000))
        wave_other = sessions["fp"].run(["wave"], other)[0]
        tf_feed = {PREV_SAMPLES: _previous(samples), "mels": feed["mels"], "noise": feed["noise"]}
        logits = sessions["tf_fp"].run(None, _feed_for(sessions["tf_fp"], tf_feed))[0]
        logits_q = sessions["tf_q"].run(None, _feed_for(sessions["tf_q"], tf_feed))[0]
        power, error = logit_powers(logits, logits_q)
        signal += power
        noise_power += error
        n = logits.shape[0] * logits.shape[1]
        if info.mode == "raw":
            agree += n * class_agreement(logits, logits_q)
        else:
            agree += n * sample_agreement(logits, logits_q, feed["noise"], "mol")
        steps += n
        mel_q += log_mel_distance(wave, wave_q, info.sample_rate)
        mel_noise += log_mel_distance(wave, wave_other, info.sample_rate)
    return QuantAccuracy(bits, info.mode, int(steps), snr_db(signal, noise_power), agree / steps, mel_q / len(mels),
                         mel_noise / len(mels), ranges)


def _previous(samples: np.ndarray) -> np.ndarray:
    """The value fed back at each step: 0, then the samples shifted by one."""
    prev = np.zeros_like(samples)
    prev[1:] = samples[:-1]
    return prev


def _feed_for(sess, feed: dict) -> dict:
    names = {i.name for i in sess.get_inputs()}
    return {k: v for k, v in feed.items() if k in names}


def _free_feed(info: WaveRNNInfo, mels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    mels = np.asarray(mels, dtype=np.float32)
    if mels.ndim == 2:
        mels = mels[None]
    steps, sequences = info.loop_shape(mels.shape[2], mels.shape[0])
    return {"mels": mels, "noise": uniform_noise(steps, sequences, seed)}


def _info(model: onnx.ModelProto) -> WaveRNNInfo:
    info = wavernn_info(model)
    if info is None:
        raise WaveoptError("quantization needs a waveopt-exported WaveRNN (its metadata says how to "
                           "feed it the calibration mels)")
    if info.teacher_forced:
        raise WaveoptError("quantize the free-running model (the teacher-forced form is for training checks)")
    return info


def _loop_stats(model: onnx.ModelProto, feed: dict) -> list[dict]:
    """Run ``model`` once with WaveRNNLoop's activation statistics on; their JSON records."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "stats.jsonl")
        with _environment(STATS_ENV, path):
            sess = session(model)  # the op reads the variable when its kernel is created
        sess.run(None, feed)
        if not os.path.exists(path):
            raise WaveoptError("the native op library wrote no activation statistics "
                               "(rebuild it: waveopt ops build)")
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]


@contextlib.contextmanager
def _environment(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old
