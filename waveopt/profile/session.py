"""Run a model under ORT's profiler: kernel time per node of the measured runs, and wall times.

Three sessions with the same options run interleaved after their warm-up:

- the profiled session: ``enable_profiling``; its warm-up runs are ordinary runs of the
  same session, and their events are dropped by time: everything before the end of the
  last warm-up ``model_run`` event (so the measured runs see a warm arena and caches);
- an unprofiled session: the wall time the model really takes;
- a calibration session, profiled, run once after each measured run: a Loop of 32 ``Add``
  kernels on [1, 64] that do almost nothing, so the mean duration ORT records for one of
  them (median over the runs) is what its profiler adds to every kernel it times (it
  formats the input and output shapes inside the timed window: 2-3 us per kernel on a
  quiet Xeon, more when other processes share the core).

Each node keeps the histogram of its call durations, so that calls during which the thread
lost its core (``preempted_above``) can be set apart: on a shared machine they are rare but
last a time slice (~4 ms) and dominate the mean of a kernel that takes 3 us.

ORT writes one event per line; the files live in a temporary folder that is removed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from waveopt.graph import iter_proto_nodes
from waveopt.runtime import session, uses_native_ops

__all__ = ["KernelTimes", "NodeTimes", "StageTimers", "with_unique_node_names", "optimized_model", "run_profiled"]

# Cumulative per-stage seconds of fused ops, by node name: {node: {stage: seconds}} (see profiler.py).
StageTimers = Callable[[ort.InferenceSession], Mapping[str, Mapping[str, float]]]
_KERNEL_SUFFIX = "_kernel_time"
_CALIBRATION_KERNELS = 32
_CALIBRATION_STEPS = 64


@dataclasses.dataclass
class NodeTimes:
    """One node's kernel events over the measured runs: their durations (us) and how often each came."""

    op: str
    durations: Counter = dataclasses.field(default_factory=Counter)
    input_shapes: list = dataclasses.field(default_factory=list)  # first call's [{dtype: dims}, ...]
    output_shapes: list = dataclasses.field(default_factory=list)

    @property
    def calls(self) -> int:
        return sum(self.durations.values())

    @property
    def total_us(self) -> float:
        return float(sum(d * n for d, n in self.durations.items()))

    def undisturbed(self) -> tuple[float, int]:
        """(mean duration of the calls not preempted, number of preempted calls); see ``preempted_above``."""
        limit = preempted_above(self.durations)
        kept = {d: n for d, n in self.durations.items() if d <= limit}
        calls = sum(kept.values())
        return sum(d * n for d, n in kept.items()) / calls, self.calls - calls

    def add(self, duration: int) -> None:
        self.durations[duration] += 1


def preempted_above(durations: Counter) -> float:
    """Calls longer than 4x the median + 20 us: the thread lost the core (a time slice is ~4 ms).

    On a shared machine a few calls of a 3 us kernel take 4000 us; they dominate its mean.
    The limit leaves a kernel's own variation (cache misses, a slower branch) alone.
    """
    total = sum(durations.values())
    seen = 0
    for duration in sorted(durations):
        seen += durations[duration]
        if 2 * seen >= total:
            return 4 * duration + 20
    return float("inf")


@dataclasses.dataclass
class KernelTimes:
    """What the profiled runs measured."""

    nodes: dict[str, NodeTimes]
    runs: int
    profiled_wall_s: list[float]
    unprofiled_wall_s: list[float]
    profiler_cost_us: float | None
    stage_seconds: dict[str, dict[str, float]]


def with_unique_node_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose every node, subgraphs included, has a non-empty name no other node has."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    seen: set[str] = set()
    counter = 0
    for node, _ in iter_proto_nodes(model.graph):
        name = node.name
        while not name or name in seen:
            counter += 1
            name = f"{node.name or node.op_type}#{counter}"
        node.name = name
        seen.add(name)
    return model


def optimized_model(model: onnx.ModelProto, threads: int) -> onnx.ModelProto | None:
    """The graph ORT runs (its optimizations applied), from a session that is only created."""
    with tempfile.TemporaryDirectory(prefix="waveopt-profile-") as tmp:
        path = Path(tmp) / "optimized.onnx"
        def save_optimized(options: ort.SessionOptions) -> None:
            options.optimized_model_filepath = str(path)

        try:
            session(model, threads, configure=save_optimized)
            return onnx.load(str(path))
        except Exception:  # some graphs cannot be saved after layout optimizations: map by name instead
            return None


def run_profiled(model: onnx.ModelProto, feed: dict[str, np.ndarray], *, threads: int, runs: int, warmup: int,
                 calibrate: bool = True,
                 on_event: Callable[[dict], None] | None = None,
                 configure: Callable[[ort.SessionOptions], None] | None = None,
                 stage_timers: StageTimers | None = None) -> KernelTimes:
    """Profile ``runs`` runs of ``model`` after ``warmup`` runs; see the module docstring.

    ``on_event`` sees every kept event (measured runs only), e.g. to write a trace.
    ``configure`` may change the profiled session's options (e.g. the config entry that turns
    a fused op's stage timers on); ``stage_timers`` reads their totals from the session, before
    and after the measured runs, and the difference is returned.
    """
    data = model.SerializeToString()
    native = uses_native_ops(model)
    with tempfile.TemporaryDirectory(prefix="waveopt-profile-") as tmp:
        profiled = _session(data, threads, profile_prefix=os.path.join(tmp, "model"), configure=configure,
                            native=native)
        plain = _session(data, threads, native=native)
        calibration = _session(_calibration_model().SerializeToString(), 1,
                               profile_prefix=os.path.join(tmp, "calibration"), optimize=False) if calibrate else None
        calibration_feed = {"steps": np.array(_CALIBRATION_STEPS, np.int64), "h0": np.zeros((1, 64), np.float32)}
        for _ in range(warmup):
            plain.run(None, feed)
            profiled.run(None, feed)
        if calibration is not None:
            calibration.run(None, calibration_feed)
        before = dict(stage_timers(profiled)) if stage_timers else {}
        profiled_wall, plain_wall = [], []
        for _ in range(runs):
            plain_wall.append(_timed(lambda: plain.run(None, feed)))
            profiled_wall.append(_timed(lambda: profiled.run(None, feed)))
            if calibration is not None:
                calibration.run(None, calibration_feed)
        after = dict(stage_timers(profiled)) if stage_timers else {}
        nodes = _read_model_events(profiled.end_profiling(), warmup, on_event)
        cost = _calibrated_cost_us(calibration.end_profiling(), "Add") if calibration is not None else None
    return KernelTimes(nodes, runs, profiled_wall, plain_wall, cost, _stage_delta(before, after))


def _session(data: bytes, threads: int, profile_prefix: str | None = None, optimize: bool = True,
             configure: Callable[[ort.SessionOptions], None] | None = None, native: bool = False):
    def options_for_profiling(options: ort.SessionOptions) -> None:
        if configure is not None:
            configure(options)
        if not optimize:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if profile_prefix:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix

    return session(data, threads, native=native, configure=options_for_profiling)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _events(path: str, only: str | None = None):
    """ORT's profile JSON, which it writes one event per line; ``only``: lines holding that text."""
    with open(path) as f:
        for line in f:
            if only is not None and only not in line:
                continue
            line = line.strip().rstrip(",")
            if line.startswith("{"):
                yield json.loads(line)


def _warmup_end(path: str, warmup: int) -> int:
    """The end (us) of the last warm-up run: events before it are dropped."""
    runs = sorted((e["ts"], e["dur"]) for e in _events(path, only="model_run") if e.get("name") == "model_run")
    if not warmup or not runs:
        return 0
    ts, dur = runs[min(warmup, len(runs)) - 1]
    return ts + dur


def _read_model_events(path: str, warmup: int, on_event) -> dict[str, NodeTimes]:
    cutoff = _warmup_end(path, warmup)
    nodes: dict[str, NodeTimes] = {}
    for event in _events(path):
        if event.get("ts", 0) < cutoff:
            continue
        name = event.get("name", "")
        if event.get("cat") == "Node" and name.endswith(_KERNEL_SUFFIX):
            node = name[: -len(_KERNEL_SUFFIX)]
            times = nodes.get(node)
            if times is None:
                args = event.get("args", {})
                times = nodes[node] = NodeTimes(args.get("op_name", ""),
                                                input_shapes=args.get("input_type_shape", []),
                                                output_shapes=args.get("output_type_shape", []))
            times.add(event["dur"])
        elif not (event.get("cat") == "Session" and name == "model_run"):
            continue
        if on_event is not None:
            on_event(event)
    return nodes


def _calibrated_cost_us(path: str, op: str) -> float | None:
    """Median over the calibration runs (the first one warms up) of the mean undisturbed ``op`` call."""
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in _events(path, only="model_run")
                  if e.get("name") == "model_run")
    per_run = [NodeTimes(op) for _ in runs]
    for event in _events(path, only=f'"{op}"'):
        if event.get("cat") != "Node" or event.get("args", {}).get("op_name") != op:
            continue
        for (start, end), times in zip(runs, per_run):
            if start <= event.get("ts", -1) <= end:
                times.add(event["dur"])
    means = [times.undisturbed()[0] for times in per_run[1:] if times.calls]
    return statistics.median(means) if means else None


def _stage_delta(before: Mapping, after: Mapping) -> dict[str, dict[str, float]]:
    return {node: {stage: seconds - before.get(node, {}).get(stage, 0.0) for stage, seconds in stages.items()}
            for node, stages in after.items()}


def _calibration_model() -> onnx.ModelProto:
    """Loop(steps): h -> h + h0 + ... (32 Adds of [1, 64]): kernels that do next to nothing."""
    width = 64
    body_nodes = [helper.make_node("Identity", ["cond"], ["cond_out"], name="cond_out")]
    previous = "h"
    for i in range(_CALIBRATION_KERNELS):
        body_nodes.append(helper.make_node("Add", [previous, "h"], [f"a{i}"], name=f"add{i}"))
        previous = f"a{i}"
    body = helper.make_graph(
        body_nodes, "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info(previous, TensorProto.FLOAT, [1, width])])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["steps", "", "h0"], ["h_last"], body=body, name="loop")], "calibration",
        [helper.make_tensor_value_info("steps", TensorProto.INT64, []),
         helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("h_last", TensorProto.FLOAT, [1, width])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
