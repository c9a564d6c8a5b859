"""``waveopt profile``: where a model's time goes, module by module, per generated sample.

ORT's profiler times every kernel (Loop-body kernels once per step); each kernel is
attributed to a WaveRNN module on the graph ORT actually ran (``profile_attribution``),
and its time is summed per module and divided by the samples of the measured runs
(steps x sequences). Control-flow nodes count only their own time, the time between their
body's kernels: for a Loop that is ``loop overhead``. ``run overhead`` is the wall time of
``session.run`` outside any kernel. Calls during which other processes had the core
(``profile_session.preempted_above``) count at the mean of the node's other calls, and
the rest of their time is the ``preempted`` row. The rows add up to the profiled wall time.

ORT's profiler is not free: it spends a few microseconds inside every kernel's timed window
(formatting shapes) and more between kernels, which on a Loop of small kernels multiplies
the run time. So the profile also gives an estimate without it, ``est.``: each kernel's
time minus, per call, the profiler's cost measured on a calibration loop between the runs.
The est. rows add up to the fastest unprofiled run (the least disturbed one): ``loop
overhead`` est. is what the kernels and the run overhead leave of it. Percentages, GFLOP/s
and GB/s use the estimate.

Extension point for a fused op's own per-stage timers: :func:`merge_stage_timers` takes
{stage: seconds} and moves that time from the op's row to the stages' modules. To have them
measured, pass :func:`profile_model` ``configure`` (turns the timers on in the profiled
session's options, e.g. a session config entry) and ``stage_timers`` (reads the op's
cumulative {node: {stage: seconds}}); the totals of the measured runs are merged. A model
with waveopt's fused ``WaveRNNLoop`` gets its stage timers by default
(``profile_native.StageTimerFile``); as it has no ONNX Loop, the op's own steps x batch
then define the sample.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Mapping
from pathlib import Path

import onnx
import onnx_ir as ir
import onnxruntime as ort

from .bandwidth import MachineLimits, probe_limits
from waveopt.errors import WaveoptError
from waveopt.model_info import wavernn_info
from waveopt.validate import load_valid_model
from .attribution import (LOOP_GLUE, LOOP_OVERHEAD, STEP_GLUE, UNATTRIBUTED, attribute, map_optimized,
                                  module_rank)
from waveopt.costs import module_costs
from .inputs import profile_inputs
from .native import StageTimerFile, fused_loop_nodes
from .session import KernelTimes, StageTimers, optimized_model, run_profiled, with_unique_node_names
from waveopt.progress import stage

__all__ = ["ModuleRow", "NodeRow", "Profile", "RUN_OVERHEAD", "PREEMPTED", "profile_model", "merge_stage_timers",
           "clamp_below_noise"]

RUN_OVERHEAD = "run overhead"
PREEMPTED = "preempted"
_TAIL = [STEP_GLUE, LOOP_GLUE, LOOP_OVERHEAD, RUN_OVERHEAD, PREEMPTED, UNATTRIBUTED]
_CONTROL_FLOW = {"Loop", "If", "Scan"}


@dataclasses.dataclass
class ModuleRow:
    """One module's share; times in microseconds per unit (a sample, or a run without a Loop)."""

    module: str
    profiled_us: float = 0.0
    est_us: float | None = None
    kernel_calls: float = 0.0
    macs: float | None = None
    weight_bytes: int = 0
    weight_bytes_per_unit: float = 0.0
    read_limit_gbps: float | None = None
    read_limit_size: int | None = None
    source: str = "ORT profiler"

    @property
    def us(self) -> float:
        """The best time we have: the estimate without the profiler, else the profiled time."""
        return self.est_us if self.est_us is not None else self.profiled_us

    @property
    def gflops(self) -> float | None:
        return 2 * self.macs / self.us / 1e3 if self.macs and self.us > 0 else None

    @property
    def gbps(self) -> float | None:
        return self.weight_bytes_per_unit / self.us / 1e3 if self.weight_bytes_per_unit and self.us > 0 else None


@dataclasses.dataclass
class NodeRow:
    name: str
    op: str
    module: str
    graph: str  # "main" or the control-flow node whose subgraph holds it
    profiled_us: float
    est_us: float | None
    calls: float


@dataclasses.dataclass
class Profile:
    """A model's time per module (see the module docstring)."""

    model: str
    kind: str
    inputs: str
    feed_shapes: dict[str, list[int]]
    threads: int
    runs: int
    warmup: int
    unit: str  # "sample" or "run"
    steps_per_run: int
    sequences: int
    wall_profiled_us: float
    wall_unprofiled_us: float
    profiler_cost_us: float | None
    rows: list[ModuleRow]
    nodes: list[NodeRow]
    limits: MachineLimits
    total_weight_bytes: int
    notes: list[str]
    # A fused op's own stage timers, as merged: {node: {stage: us per unit}}.
    stages: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)

    @property
    def samples_per_run(self) -> int:
        return self.steps_per_run * self.sequences

    @property
    def total_us(self) -> float:
        """What the percentages are of: the unprofiled wall time when estimated, else the profiled one."""
        return self.wall_unprofiled_us if self.profiler_cost_us is not None else self.wall_profiled_us

    def row(self, module: str) -> ModuleRow:
        for row in self.rows:
            if row.module == module:
                return row
        row = ModuleRow(module, est_us=0.0 if self.profiler_cost_us is not None else None)
        self.rows.append(row)
        self.rows.sort(key=_row_order)
        return row

    def percent(self, row: ModuleRow) -> float | None:
        """Of the estimated total when there is one, else of the profiled one; None for a row without."""
        value = row.est_us if self.profiler_cost_us is not None else row.profiled_us
        return 100 * value / self.total_us if value is not None and self.total_us > 0 else None

    def as_dict(self) -> dict:
        """The same numbers as the table, JSON-ready."""
        return {
            "model": self.model, "kind": self.kind, "inputs": self.inputs, "feed_shapes": self.feed_shapes,
            "threads": self.threads, "runs": self.runs, "warmup": self.warmup, "unit": self.unit,
            "steps_per_run": self.steps_per_run, "sequences": self.sequences,
            "samples_per_run": self.samples_per_run,
            "wall_us": {"profiled": self.wall_profiled_us, "unprofiled": self.wall_unprofiled_us},
            "profiler_cost_us_per_kernel": self.profiler_cost_us,
            "modules": [{
                "module": r.module, "profiled_us": r.profiled_us, "est_us": r.est_us, "percent": self.percent(r),
                "kernel_calls": r.kernel_calls, "macs": r.macs, "gflops": r.gflops,
                "weight_bytes": r.weight_bytes, "weight_bytes_per_unit": r.weight_bytes_per_unit, "gbps": r.gbps,
                "read_limit_gbps": r.read_limit_gbps, "read_limit_at_bytes": r.read_limit_size, "source": r.source,
            } for r in self.rows],
            "nodes": [dataclasses.asdict(n) for n in self.nodes],
            "limits": self.limits.as_dict(),
            "total_weight_bytes": self.total_weight_bytes,
            "notes": self.notes,
            "stages": self.stages,
        }


def profile_model(path: Path, *, threads: int = 1, frames: int = 2, runs: int = 3, warmup: int = 1,
                  dims: dict[str, int] | None = None, inputs: Path | None = None, calibrate: bool = True,
                  batch: int = 1, trace=None, trace_pid: int = 1,
                  configure: Callable[[ort.SessionOptions], None] | None = None,
                  stage_timers: StageTimers | None = None, allow_invalid: bool = False) -> Profile:
    """Profile the model at ``path``; ``trace`` (a ``profile_trace.TraceWriter``) gets its events.

    ``configure`` and ``stage_timers``: the extension point for a fused op's own timers, see
    ``profile_session.run_profiled``; what ``stage_timers`` measured is merged with
    :func:`merge_stage_timers`. The model is validated first (:mod:`waveopt.validate`) unless
    ``allow_invalid``.
    """
    for name, value, least in (("threads", threads, 1), ("runs", runs, 1), ("warmup", warmup, 0)):
        if value < least:
            raise WaveoptError(f"--{name} must be at least {least}")
    model = load_valid_model(path, allow_invalid)
    info = wavernn_info(model)
    feed, source = profile_inputs(model, frames, dims or {}, inputs, batch=batch)
    notes: list[str] = []
    graphs = _graphs(path, model, threads, notes)
    on_event = trace.model_events(trace_pid, str(path), graphs.ran_labels) if trace is not None else None
    times, native_timers = _timed_runs(path, graphs.named, feed, threads=threads, runs=runs, warmup=warmup,
                                       calibrate=calibrate, on_event=on_event, configure=configure,
                                       stage_timers=stage_timers)
    missing = sorted(set(times.nodes) - set(graphs.ran_labels))
    if missing:
        notes.append(f"{len(missing)} kernel(s) not found in ORT's optimized graph, left unattributed: "
                     + ", ".join(missing[:5]))
    steps, sequences = _steps_and_sequences(times, graphs, native_timers, notes)
    unit_count = runs * (steps * sequences if steps else 1)
    profile = Profile(
        model=str(path), kind=f"waveopt {info.mode.upper()} export" if info else "foreign graph",
        inputs=source, feed_shapes={k: list(v.shape) for k, v in feed.items()},
        threads=threads, runs=runs, warmup=warmup, unit="sample" if steps else "run",
        steps_per_run=steps or 1, sequences=sequences if steps else 1,
        wall_profiled_us=statistics.fmean(times.profiled_wall_s) * 1e6 * runs / unit_count,
        wall_unprofiled_us=min(times.unprofiled_wall_s) * 1e6 * runs / unit_count,
        profiler_cost_us=times.profiler_cost_us,
        rows=[], nodes=[], limits=probe_limits(), total_weight_bytes=0, notes=notes)
    _fill_rows(profile, times, graphs.ran_labels, graphs.owners, unit_count, has_loop=bool(graphs.outer_loops))
    runtime_shapes = {name: ([_dims(i) for i in node.input_shapes], [_dims(o) for o in node.output_shapes])
                      for name, node in times.nodes.items()}
    costs = module_costs(graphs.named, graphs.labels, profile.feed_shapes, profile.samples_per_run,
                         profile.sequences, runtime_shapes)
    _fill_costs(profile, costs)
    for node, stages in times.stage_seconds.items():
        merge_stage_timers(profile, node, stages)
    clamp_below_noise(profile)
    return profile


@dataclasses.dataclass
class _Graphs:
    """The model with unique node names, the graph ORT runs, and the module of their nodes."""

    named: onnx.ModelProto
    labels: dict[str, str]  # of the named model's nodes
    ran: ir.Model
    ran_labels: dict[str, str]
    owners: dict[str, str]  # see _owners
    outer_loops: set[str]  # the names of the Loops in the main graph ORT runs


def _graphs(path: Path, model: onnx.ModelProto, threads: int, notes: list[str]) -> _Graphs:
    named = with_unique_node_names(model)
    original = ir.serde.deserialize_model(named)
    labels = attribute(original)
    with stage(f"ONNX Runtime's graph optimization of {path}"):
        optimized = optimized_model(named, threads)
    if optimized is None:
        notes.append("ORT's optimized graph could not be saved: kernels are matched to the original graph by name")
        ran, ran_labels = original, labels
    else:
        ran = ir.serde.deserialize_model(optimized)
        ran_labels = map_optimized(ran, original, labels)
    outer_loops = {n.name for n in ran.graph if n.op_type == "Loop"}
    return _Graphs(named, labels, ran, ran_labels, _owners(ran.graph), outer_loops)


def _timed_runs(path: Path, named: onnx.ModelProto, feed, *, threads: int, runs: int, warmup: int, calibrate: bool,
                on_event, configure, stage_timers) -> tuple[KernelTimes, StageTimerFile | None]:
    """The kernels' times; a fused op's own stage timers are read when the caller set none."""
    native_timers = None
    if configure is None and stage_timers is None and fused_loop_nodes(named):
        native_timers = stage_timers = StageTimerFile()
        configure = native_timers.configure
    try:
        with stage(f"profiling {path}: {warmup} warm-up and {runs} profiled run(s)"
                   + (", then the profiler's own cost" if calibrate else "")):
            times = run_profiled(named, feed, threads=threads, runs=runs, warmup=warmup, calibrate=calibrate,
                                 on_event=on_event, configure=configure, stage_timers=stage_timers)
    except Exception as exc:
        if not type(exc).__module__.startswith("onnxruntime"):
            raise
        message = " ".join(str(exc).split())
        raise WaveoptError(f"ONNX Runtime cannot run {path} with these inputs ({message[:300]})") from exc
    finally:
        if native_timers is not None:
            native_timers.close()
    return times, native_timers


def _steps_and_sequences(times: KernelTimes, graphs: _Graphs, native_timers: StageTimerFile | None,
                         notes: list[str]) -> tuple[int, int]:
    """(steps per run, sequences) of the generation loop, 0 steps when none ran; notes say why."""
    outer_loops = graphs.outer_loops
    steps, sequences = _loop_extent(times, graphs.owners, outer_loops)
    if not outer_loops and native_timers is not None and native_timers.extent and times.stage_seconds:
        steps, sequences = native_timers.extent  # the fused op's loop: per sample as for an ONNX Loop
    if outer_loops and not steps:
        notes.append("the Loop ran no iterations with these inputs: times are per run (give --dim or --inputs)")
    elif not outer_loops and not steps:
        notes.append("no Loop: times are per run and modules come from provenance only; see the nodes")
    return steps, sequences


def clamp_below_noise(profile: Profile) -> None:
    """No time is negative: a row whose estimate (or profiled time) came out below zero is
    shown as 0 and named in a note, "within noise". The estimate subtracts the profiler's
    mean cost per kernel, which varies from kernel to kernel; the overhead rows are what is
    left of a wall time after the kernels; a fused op's row is what its stage timers leave."""
    clamped = []
    for row in profile.rows:
        if row.est_us is not None and row.est_us < 0:
            clamped.append(f"{row.module} (est. {-row.est_us:.2f} us under)")
            row.est_us = 0.0
        if row.profiled_us < 0:
            clamped.append(f"{row.module} (profiled {-row.profiled_us:.2f} us under)")
            row.profiled_us = 0.0
    if clamped:
        profile.notes.append(f"within noise, shown as 0: {', '.join(clamped)} came out under zero, below what "
                             "the profiler correction resolves (its cost per kernel varies; the mean is subtracted)")


def merge_stage_timers(profile: Profile, node: str, stages: Mapping[str, float]) -> None:
    """Split the fused op ``node``'s time into its stages ({stage: seconds over the measured runs}).

    A stage named after a module (``rnn1``, ``sampling``, ...) adds to that module's row,
    any other name gets a row of its own; the op's row keeps what its stages do not cover.
    The stages' times come from the op itself, so they need no profiler correction.
    """
    source = next((n for n in profile.nodes if n.name == node), None)
    if source is None:
        raise WaveoptError(f"no profiled node named {node!r} to merge stage timers into")
    from_row = profile.row(source.module)
    scale = 1e6 / (profile.runs * profile.samples_per_run if profile.unit == "sample" else profile.runs)
    for stage_name, seconds in stages.items():
        us = seconds * scale
        profile.stages.setdefault(node, {})[stage_name] = profile.stages.get(node, {}).get(stage_name, 0.0) + us
        row = profile.row(stage_name)
        row.profiled_us += us
        from_row.profiled_us -= us
        if row.est_us is not None and from_row.est_us is not None:
            row.est_us += us
            from_row.est_us -= us
        row.source = "op timers"


# --- assembly ---------------------------------------------------------------------------------
def _owners(graph: ir.Graph) -> dict[str, str]:
    """Node name -> name of the control-flow node whose subgraph directly holds it."""
    owners: dict[str, str] = {}
    for node in ir.traversal.RecursiveGraphIterator(graph):
        for attr in node.attributes.values():
            subgraphs = []
            if attr.type == ir.AttributeType.GRAPH:
                subgraphs = [attr.as_graph()]
            elif attr.type == ir.AttributeType.GRAPHS:
                subgraphs = list(attr.as_graphs())
            for sub in subgraphs:
                for inner in sub:
                    owners[inner.name] = node.name
    return owners


def _dims(item: dict) -> list[int]:
    """ORT's ``{"float": [1, 512]}`` -> [1, 512]."""
    return next(iter(item.values()), [])


def _loop_extent(times: KernelTimes, owners: dict[str, str], outer_loops: set[str]) -> tuple[int, int]:
    """(steps per run, sequences) of the outer Loop whose body takes most of the time."""
    body_time: dict[str, float] = {}
    body_calls: dict[str, int] = {}
    for name, node in times.nodes.items():
        loop = owners.get(name)
        if loop in outer_loops:
            body_time[loop] = body_time.get(loop, 0.0) + node.total_us
            body_calls[loop] = max(body_calls.get(loop, 0), node.calls)
    if not body_time:
        return 0, 1
    loop = max(body_time, key=body_time.get)
    steps = body_calls[loop] // times.runs
    shapes = [shape for item in times.nodes[loop].input_shapes for dtype, shape in item.items()
              if dtype.startswith("float") and len(shape) >= 2]
    return steps, (shapes[0][0] if shapes else 1)


def _fill_rows(profile: Profile, times: KernelTimes, labels: dict[str, str], owners: dict[str, str],
               unit_count: int, has_loop: bool) -> None:
    """Module rows from the kernels; see the module docstring for the est. column."""
    cost = times.profiler_cost_us
    children: dict[str, float] = {}
    for name, node in times.nodes.items():
        if name in owners:
            children[owners[name]] = children.get(owners[name], 0.0) + node.total_us
    top_level_us = sum(node.total_us for name, node in times.nodes.items() if name not in owners)
    est_kernels = lost_us = 0.0
    lost_calls = 0
    for name, node in times.nodes.items():
        module = labels.get(name, UNATTRIBUTED)
        if node.op in _CONTROL_FLOW and name in children:
            own_us, est = node.total_us - children[name], None  # between its subgraph's kernels
            if node.op == "Loop":
                module = LOOP_OVERHEAD
        else:
            mean, lost = node.undisturbed()
            own_us = node.calls * mean  # the calls that lost the core count at the mean of the others
            lost_us += node.total_us - own_us
            lost_calls += lost
            est = node.calls * (mean - cost) if cost is not None else None
            est_kernels += est or 0.0
        row = profile.row(module)
        row.profiled_us += own_us / unit_count
        row.kernel_calls += node.calls / unit_count
        if est is not None and row.est_us is not None:
            row.est_us += est / unit_count
        profile.nodes.append(NodeRow(name, node.op, module, owners.get(name, "main"), own_us / unit_count,
                                     None if est is None else est / unit_count, node.calls / unit_count))
    profile.nodes.sort(key=lambda n: n.profiled_us, reverse=True)
    run_overhead = (sum(times.profiled_wall_s) * 1e6 - top_level_us) / unit_count
    profile.row(RUN_OVERHEAD).profiled_us = run_overhead
    if lost_calls:
        row = profile.row(PREEMPTED)
        row.profiled_us, row.est_us = lost_us / unit_count, None
        profile.notes.append(f"{PREEMPTED}: {lost_calls} of {sum(n.calls for n in times.nodes.values()):,} kernel "
                             "calls took over 4x their median + 20 us (other processes had the core)")
    if cost is None:
        return
    rest = profile.wall_unprofiled_us - est_kernels / unit_count  # the fastest run: the least preempted
    if has_loop:
        profile.row(RUN_OVERHEAD).est_us = run_overhead
        profile.row(LOOP_OVERHEAD).est_us = rest - run_overhead
    else:
        profile.row(RUN_OVERHEAD).est_us = rest


def _fill_costs(profile: Profile, costs) -> None:
    total = 0
    for module, cost in costs.items():
        row = profile.row(module)
        row.macs = cost.macs_per_sample if cost.macs_per_sample or not cost.uncounted else None
        row.weight_bytes = cost.weight_bytes
        row.weight_bytes_per_unit = cost.weight_bytes_per_sample
        if cost.weight_bytes:
            row.read_limit_gbps, row.read_limit_size = profile.limits.read_rate(cost.weight_bytes)
        total += cost.weight_bytes
        if cost.uncounted:
            profile.notes.append(f"{module}: MACs not counted for {', '.join(cost.uncounted[:3])}")
    profile.total_weight_bytes = total


def _row_order(row: ModuleRow):
    if row.module in _TAIL:
        return (1, _TAIL.index(row.module), 0, row.module)
    return (0, *module_rank(row.module))
