"""The one exception type users see."""

from __future__ import annotations

__all__ = ["WaveoptError"]


class WaveoptError(Exception):
    """A user-facing error: the CLI prints ``error: <message>`` on one line and exits 2.

    The message names the problem and the path or value involved.
    """
