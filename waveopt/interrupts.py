"""SIGINT and SIGTERM as an exception: the command stops where it is, cleans up, exits 128 + signal.

    with signals_raise():          # the CLI's entry point
        ...                        # Interrupted(SIGINT) / Interrupted(SIGTERM) may be raised here

``Interrupted`` is a BaseException, so ``except Exception`` in waveopt or in a library does
not swallow it (KeyboardInterrupt would be: typer turns it into a silent exit), while
``finally`` blocks and ``except BaseException`` clean-ups (the atomic writer's temp file,
a running ORT call, see ``runtime.run``) still run.
"""

from __future__ import annotations

import contextlib
import signal
import threading

__all__ = ["Interrupted", "signals_raise"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A signal asked the command to stop; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int):
        self.signum = signum
        self.name = signal.Signals(signum).name
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {self.name}")


@contextlib.contextmanager
def signals_raise():
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted` in the main thread.

    The previous handlers come back afterwards. Elsewhere than in the main thread (where
    Python cannot install handlers) the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}

    def handler(signum, frame):
        raise Interrupted(signum)

    for s in SIGNALS:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
