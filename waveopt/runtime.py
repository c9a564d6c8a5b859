"""ONNX Runtime sessions and timing, the way every waveopt command runs a model.

The one place that creates ``onnxruntime.InferenceSession``s: checks, profiles, the
sampler and quantization probes all come here.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable

import onnx
import onnxruntime as ort

from waveopt.native_library import DOMAIN, register

__all__ = ["session", "session_options", "native_session_options", "time_calls", "Timing", "uses_native_ops"]

Model = str | os.PathLike | bytes | onnx.ModelProto


def session_options(threads: int = 1, native: bool = False) -> ort.SessionOptions:
    """CPU session options: ``threads`` threads, no inter-op parallelism.

    ``threads`` also becomes the session config entry ``waveopt.threads``: the worker team of
    each WaveRNNLoop / FusedDense kernel (README "Threads"). With ``native`` (the model's work
    is in those ops) ORT itself runs 1 intra-op thread without spinning, so its pool never
    competes with the ops' team for the cores; otherwise ORT runs ``threads`` intra-op threads
    (spinning only when there are several). Register the op library after this (it reads the
    entry when it is registered).
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1 if native else threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry("waveopt.threads", str(threads))
    if threads == 1 or native:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def native_session_options(threads: int = 1) -> ort.SessionOptions:
    """:func:`session_options` with waveopt's native op library registered."""
    return register(session_options(threads, native=True))


def session(model: Model, threads: int = 1, options: ort.SessionOptions | None = None, *,
            native: bool | None = None,
            configure: Callable[[ort.SessionOptions], None] | None = None) -> ort.InferenceSession:
    """An InferenceSession on the CPU for a model path, serialized bytes or ModelProto.

    Without ``options``, :func:`session_options` (``threads``); the native op library is
    registered when ``native`` says so, or (``native=None``) when the model imports its
    domain; then ``threads`` go to the ops' own worker team and ORT runs one intra-op thread
    (``session_options(threads, native=True)``). ``configure`` adjusts the options last
    (profiling, optimization level, ...).
    """
    if options is None:
        if native is None:
            native = uses_native_ops(_header(model))
        options = session_options(threads, native=native)
        if native:
            register(options)
    if configure is not None:
        configure(options)
    if isinstance(model, onnx.ModelProto):
        source = model.SerializeToString()
    else:
        source = model if isinstance(model, bytes) else os.fspath(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _header(model: Model) -> onnx.ModelProto:
    """The model without external data (enough to read its opset imports)."""
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, bytes):
        return onnx.load_from_string(model)
    return onnx.load(os.fspath(model), load_external_data=False)


def uses_native_ops(model: onnx.ModelProto) -> bool:
    """Whether the model imports the waveopt.ops domain (WaveRNNLoop, FusedDense)."""
    return any(o.domain == DOMAIN for o in model.opset_import)


class Timing:
    """Wall-clock seconds of repeated calls, after warm-up."""

    def __init__(self, seconds: list[float]):
        self.seconds = seconds

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def spread(self) -> float:
        """(max - min) / median: how noisy the repeats were."""
        return (max(self.seconds) - min(self.seconds)) / self.median


def time_calls(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return Timing(seconds)
