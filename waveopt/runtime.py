"""ONNX Runtime sessions and timing, the way every waveopt command runs a model."""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable

import onnx
import onnxruntime as ort

__all__ = ["session", "session_options", "time_calls", "Timing", "uses_native_ops"]


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


def session(model: str | os.PathLike | onnx.ModelProto, threads: int = 1,
            options: ort.SessionOptions | None = None) -> ort.InferenceSession:
    """An InferenceSession on the CPU for a model path or ModelProto.

    A model that uses waveopt's native ops gets the op library registered, and ``threads``
    go to the ops' own team (``session_options(threads, native=True)``).
    """
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(os.fspath(model), load_external_data=False)
    if options is None:
        native = uses_native_ops(proto)
        options = session_options(threads, native=native)
        if native:
            from . import ops

            ops.register(options)
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else os.fspath(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def uses_native_ops(model: onnx.ModelProto) -> bool:
    """Whether the model imports the waveopt.ops domain (WaveRNNLoop, FusedDense)."""
    return any(o.domain == "waveopt.ops" for o in model.opset_import)


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
