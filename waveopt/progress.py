"""Short progress lines on stderr for long work (export, passes, the quantization guard, profiling).

Library code marks its stages; it prints nothing unless the caller turned reporting on (the
CLI does, unless ``--quiet`` or ``--json``)::

    with reporting():                        # the CLI command
        export_model(...)                    #   library code:  with stage("exporting"): ...

    stderr:  [   0.0 s] building the demo model
             [   1.2 s] exporting with torch.onnx (dynamo) ...
             [ 148.9 s] exporting with torch.onnx (dynamo): done in 147.7 s

A stage's line appears only once it has run for :data:`SHOW_AFTER_SECONDS`, so quick
commands stay quiet; times are seconds since reporting began. Never written to stdout.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import threading
import time
from collections.abc import Iterator

__all__ = ["reporting", "stage", "enabled", "SHOW_AFTER_SECONDS"]

# A stage announces itself once it has run this long (quick stages print nothing).
SHOW_AFTER_SECONDS = 1.0


class _Reporter:
    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.lock = threading.Lock()

    def write(self, at: float, text: str) -> None:
        with self.lock:
            stream = sys.stderr  # looked up at each write: tests and callers may redirect it
            stream.write(f"[{at - self.start:7.1f} s] {text}\n")
            stream.flush()


_current: contextvars.ContextVar[_Reporter | None] = contextvars.ContextVar("waveopt_progress", default=None)


@contextlib.contextmanager
def reporting(on: bool = True) -> Iterator[None]:
    """Within this block, :func:`stage` writes progress lines to stderr (nothing when ``on`` is false)."""
    token = _current.set(_Reporter() if on else None)
    try:
        yield
    finally:
        _current.reset(token)


def enabled() -> bool:
    """Whether progress is being reported (e.g. to decide on a progress bar)."""
    return _current.get() is not None


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Mark a stage of long work: ``name ...`` once it has run SHOW_AFTER_SECONDS, ``done`` after."""
    reporter = _current.get()
    if reporter is None:
        yield
        return
    started = time.perf_counter()
    shown = threading.Event()

    def announce() -> None:
        shown.set()
        reporter.write(started, f"{name} ...")

    timer = threading.Timer(SHOW_AFTER_SECONDS, announce)
    timer.daemon = True
    timer.start()
    finished = False
    try:
        yield
        finished = True
    finally:
        timer.cancel()
        timer.join()
        if finished and shown.is_set():  # a failed stage leaves the last word to the error line
            now = time.perf_counter()
            reporter.write(now, f"{name}: done in {now - started:.1f} s")
