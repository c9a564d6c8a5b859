"""The exception types users see."""

from __future__ import annotations

__all__ = ["WaveoptError", "InvalidModel", "one_line"]


class WaveoptError(Exception):
    """A user-facing error: the CLI prints ``error: <message>`` on one line and exits 2.

    The message names the problem and the path or value involved.
    """


class InvalidModel(WaveoptError):
    """A model waveopt refuses to work on (``error: invalid model: <what>``); see waveopt.validate."""

    def __init__(self, problem: str):
        super().__init__(f"invalid model: {problem}")
        self.problem = problem


def one_line(error: BaseException | str, limit: int = 300) -> str:
    """``error``'s text on one line (whitespace collapsed), cut at ``limit`` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
