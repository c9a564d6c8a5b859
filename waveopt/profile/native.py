"""Per-stage timers of the fused ``waveopt.ops::WaveRNNLoop`` for ``waveopt profile``.

The op times its stages (rnn1, rnn2, fc1, fc2, fc3, sampling) with steady_clock when the
environment variable ``WAVEOPT_STAGE_TIMERS`` names a file at kernel creation, and appends
one JSON line per Compute: ``{"node", "kernel", "steps", "batch", "seconds": {stage: s}}``.
:class:`StageTimerFile` points the variable at a temporary file just before the profiled
session is created (``configure``) and restores it after; as ``stage_timers`` it is read
before and after the measured runs, so the warm-up's lines are left out. The unprofiled
session created after the profiled one times its runs too; its kernels are numbered after
the profiled session's, so per node only the lowest-numbered kernel's lines count.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping

import onnx
import onnxruntime as ort

from waveopt.native_library import DOMAIN

__all__ = ["ENV", "STAGES", "StageTimerFile", "fused_loop_nodes", "read_stage_lines"]

ENV = "WAVEOPT_STAGE_TIMERS"
STAGES = ("rnn1", "rnn2", "fc1", "fc2", "fc3", "sampling")


def fused_loop_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the WaveRNNLoop nodes in the main graph (where the op is placed)."""
    return [n.name for n in model.graph.node if n.domain == DOMAIN and n.op_type == "WaveRNNLoop"]


def read_stage_lines(path: str | os.PathLike, offset: int = 0) -> list[dict]:
    """The op's JSON lines from byte ``offset`` on (a partial last line is left out)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")[:-1]
    return [json.loads(line) for line in lines if line.strip()]


class StageTimerFile:
    """``configure`` / ``stage_timers`` for :func:`waveopt.profile.profiler.profile_model`; use as a context manager."""

    def __init__(self):
        fd, self.path = tempfile.mkstemp(prefix="waveopt-stages-", suffix=".jsonl")
        os.close(fd)
        self._saved: str | None = None
        self._set = False
        self._offset: int | None = None
        self.extent: tuple[int, int] | None = None  # (steps, batch) per run, from the measured lines

    def configure(self, options: ort.SessionOptions) -> None:
        """Turn the timers on for the session about to be created (the op reads the variable then)."""
        if not self._set:
            self._saved, self._set = os.environ.get(ENV), True
        os.environ[ENV] = self.path

    def __call__(self, session: ort.InferenceSession) -> Mapping[str, Mapping[str, float]]:
        """Cumulative {node: {stage: seconds}} since the previous call (the first call: the baseline)."""
        size = os.path.getsize(self.path)
        if self._offset is None:
            self._offset = size
            return {}
        lines, self._offset = read_stage_lines(self.path, self._offset), size
        first: dict[str, int] = {}
        for line in lines:
            first[line["node"]] = min(first.get(line["node"], line["kernel"]), line["kernel"])
        totals: dict[str, dict[str, float]] = {}
        for line in lines:
            if line["kernel"] != first[line["node"]]:
                continue  # the unprofiled session's kernel
            stages = totals.setdefault(line["node"], dict.fromkeys(STAGES, 0.0))
            for stage, seconds in line["seconds"].items():
                stages[stage] = stages.get(stage, 0.0) + seconds
            self.extent = (int(line["steps"]), int(line["batch"]))
        return totals

    def close(self) -> None:
        if self._set:
            if self._saved is None:
                os.environ.pop(ENV, None)
            else:
                os.environ[ENV] = self._saved
            self._set = False
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> StageTimerFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
