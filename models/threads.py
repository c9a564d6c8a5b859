"""torch on one intra-op thread for the reference models' step-by-step work.

A WaveRNN step is a handful of tiny products: splitting them over threads never pays, and
with OpenMP's spinning team on a machine whose cores are busy it costs 100x or more (a
1,650-step ``nn.GRU`` at hidden 64: 0.03 s on one thread, 9 s on two of two busy cores).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["one_torch_thread"]


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Within the block torch runs on one thread; the caller's setting comes back after."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)
