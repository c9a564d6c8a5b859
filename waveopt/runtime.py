"""ONNX Runtime sessions and timing, the way every waveopt command runs a model.

The one place that creates ``onnxruntime.InferenceSession``s: checks, profiles, the
sampler and quantization probes all come here.

ONNX Runtime's own log is silenced below FATAL in every session waveopt creates
(:data:`ORT_LOG_SEVERITY`; ``WAVEOPT_DEBUG=1`` shows its warnings): what goes wrong
reaches the user as the exception, which :func:`session` and :func:`run` turn into one
line (:func:`ort_message`). :func:`run` can be interrupted: SIGINT/SIGTERM while it runs
stop the call through ``RunOptions.terminate`` and are re-raised once ORT has returned.
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import onnx
import onnxruntime as ort

from waveopt.errors import WaveoptError, one_line
from waveopt.native_library import DOMAIN, register

__all__ = ["session", "session_options", "native_session_options", "run", "run_options", "ort_message",
           "quiet_ort_logs", "ORT_LOG_SEVERITY", "time_calls", "Timing", "uses_native_ops"]

Model = str | os.PathLike | bytes | onnx.ModelProto

# 0 verbose, 1 info, 2 warning, 3 error, 4 fatal. ORT logs an error before raising it; the
# exception carries the same text, so the log line would only say it twice.
ORT_LOG_SEVERITY = 2 if os.environ.get("WAVEOPT_DEBUG") else 4


def quiet_ort_logs() -> None:
    """Silence ORT's process-wide default logger (what it prints outside a session's options)."""
    ort.set_default_logger_severity(ORT_LOG_SEVERITY)


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
    options.log_severity_level = ORT_LOG_SEVERITY
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
    (profiling, optimization level, ...). ORT refusing the model raises a WaveoptError with
    its message on one line.
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
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise WaveoptError(f"ONNX Runtime cannot load the model: {ort_message(e)}") from e


def run_options() -> ort.RunOptions:
    """RunOptions with ORT's log silenced like the sessions' (see :data:`ORT_LOG_SEVERITY`)."""
    options = ort.RunOptions()
    options.log_severity_level = ORT_LOG_SEVERITY
    return options


def run(sess: ort.InferenceSession, output_names: Sequence[str] | None, feed: Mapping[str, object],
        while_waiting: Callable[[], None] | None = None) -> list:
    """``sess.run(output_names, feed)``, interruptible, with ORT's errors as one-line WaveoptErrors.

    The call runs in a worker thread while this thread waits (calling ``while_waiting``
    every 0.2 s), so a signal handler or KeyboardInterrupt gets here at once: it sets
    ``RunOptions.terminate``, waits for ORT to return and is re-raised. (A signal that
    arrives while the interpreter waits inside ``sess.run`` would otherwise wait for the
    whole run, and exiting with ORT still running in a thread aborts the process.) ORT
    stops between kernels: a single long kernel (the native ``WaveRNNLoop``) runs to its end.
    """
    options = run_options()
    result: dict = {}
    done = threading.Event()

    def work():
        # Signals go to the waiting thread, which handles them.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            result["outputs"] = sess.run(output_names, dict(feed), options)
        except BaseException as e:  # handed to the waiting thread
            result["error"] = e
        finally:
            done.set()

    # Not Thread.join: an exception raised inside join() marks the thread stopped while it still
    # runs (CPython bpo-45274), and the interpreter then exits under ORT's feet (SIGABRT).
    threading.Thread(target=work, name="waveopt-ort-run").start()
    try:
        while not done.wait(0.2):
            if while_waiting is not None:
                while_waiting()
    except BaseException:
        options.terminate = True
        _wait_through_signals(done)
        raise
    if "error" in result:
        raise WaveoptError(f"ONNX Runtime failed running the model: {ort_message(result['error'])}") \
            from result["error"]
    return result["outputs"]


def _wait_through_signals(done: threading.Event) -> None:
    """Wait for ``done`` however many more signals arrive (ORT returns soon after terminate)."""
    while not done.is_set():
        try:
            done.wait(0.1)
        except BaseException:  # a second Ctrl-C: the first one is already being handled
            continue


_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : (\w+) : ")
_SOURCE_LOCATION = re.compile(r"/onnxruntime_src/\S+:\d+ (?:\S+ )?\S+?\(.*?\) ")


def ort_message(error: BaseException, limit: int = 300) -> str:
    """ORT's exception text on one line: status name, message; no C++ source locations."""
    text = _SOURCE_LOCATION.sub("", " ".join(str(error).split()))
    text = _ORT_PREFIX.sub(lambda m: f"{m.group(1)}: ", text)
    return one_line(text, limit)


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
