"""The one exception of the analyses: the graph is not what the analysis recognises."""

__all__ = ["NotRecognised"]


class NotRecognised(Exception):
    """The Loop is not the WaveRNN recurrence (or its sampler not WaveRNN's); the message says why."""
