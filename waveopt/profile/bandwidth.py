"""One core's limits that a profile is read against: streaming read rate and FMA peak.

How they are measured (best of several calls: on a shared machine the best call is the one least disturbed):

- Read rate at 1, 3, 12 and 16 MB: ``np.max`` over a float32 buffer of that size. One call
  reads the buffer k times through a zero-stride 2-D view (k * size ~ 64 MB), so a call
  takes 1-5 ms and Python's per-call cost (~5 us) is under 1% of it. numpy's max reduction
  is SIMD-vectorised and single-threaded, so it runs at the rate the memory level holding
  the buffer delivers; ``np.sum`` is not used because its pairwise summation is
  compute-bound (~18 GB/s even from L2 on a Xeon that streams 70 GB/s).
- FMA peak: a single-threaded ORT ``MatMul`` of 512 x 512 by 512 x 512 (MLAS SGEMM):
  2 * 512^3 / time, i.e. the flops one core sustains with the kernels ORT itself uses.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from waveopt.runtime import session

__all__ = ["MachineLimits", "probe_limits", "read_rate_gbps", "fma_peak_gflops", "PROBE_SIZES_MB"]

PROBE_SIZES_MB = (1, 3, 12, 16)
MB = 2**20


@dataclasses.dataclass(frozen=True)
class MachineLimits:
    """Read rate (GB/s) per probed buffer size (bytes) and the FMA peak (GFLOP/s), one core."""

    read_gbps: dict[int, float]
    fma_gflops: float

    def read_rate(self, nbytes: int) -> tuple[float, int]:
        """(GB/s, probed size): the smallest probed buffer that holds ``nbytes`` (else the largest)."""
        sizes = sorted(self.read_gbps)
        size = next((s for s in sizes if s >= nbytes), sizes[-1])
        return self.read_gbps[size], size

    def as_dict(self) -> dict:
        return {"read_gbps": {f"{s // MB} MB": round(r, 2) for s, r in sorted(self.read_gbps.items())},
                "fma_gflops": round(self.fma_gflops, 1),
                "method": "read: np.max over a float32 buffer re-read through a zero-stride view, "
                          "best of 15; FMA: single-threaded ORT MatMul 512^3, best of 5"}


@functools.lru_cache(maxsize=1)
def probe_limits() -> MachineLimits:
    """Measure once per process (about 0.3 s)."""
    return MachineLimits({mb * MB: read_rate_gbps(mb * MB) for mb in PROBE_SIZES_MB}, fma_peak_gflops())


def read_rate_gbps(nbytes: int, bytes_per_call: int = 64 * MB, trials: int = 15) -> float:
    """Streaming read rate of one core over a buffer of ``nbytes`` (see the module docstring)."""
    n = max(1, nbytes // 4)
    buffer = np.random.default_rng(0).random(n, dtype=np.float32)
    repeats = max(1, bytes_per_call // buffer.nbytes)
    view = np.lib.stride_tricks.as_strided(buffer, shape=(repeats, n), strides=(0, 4), writeable=False)
    view.max()  # page in and warm the cache level the buffer fits
    best = min(_seconds(view.max) for _ in range(trials))
    return repeats * buffer.nbytes / best / 1e9


def fma_peak_gflops(n: int = 512, trials: int = 5) -> float:
    """Single-threaded SGEMM rate of ORT's CPU provider (see the module docstring)."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["A", "B"], ["C"])], "sgemm",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("C", TensorProto.FLOAT, [n, n])],
        [numpy_helper.from_array(a, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    sess = session(model, threads=1)
    feed = {"A": a}
    sess.run(None, feed)
    best = min(_seconds(lambda: sess.run(None, feed)) for _ in range(trials))
    return 2 * n**3 / best / 1e9


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
