"""``waveopt profile``: module attribution (provenance and structure), totals, JSON, compare, trace, bad input.

Timings on a shared machine are noisy: the tests check only that the parts add up to the
whole they were measured against, never how fast anything is.
"""

from __future__ import annotations

import copy
import json
import re

import onnx
import onnx_ir as ir
import pytest

from onnx_builders import cnn_model
from waveopt.profile.bandwidth import MB, probe_limits
from cli_helpers import assert_one_line_error, cli
from waveopt.cli import main
from waveopt.profile.attribution import UNATTRIBUTED, attribute
from waveopt.profile.table import fmt_us, format_profile
from waveopt.profile.profiler import RUN_OVERHEAD, merge_stage_timers, profile_model
from waveopt.report import graph_stats

from model_fixtures import CONFIGS


WAVERNN_MODULES = ["conditioning", "I", "rnn1", "rnn2", "fc1", "fc2", "fc3", "sampling"]
FOREIGN_STEPS = 400


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("profile")


def optimized(raw_path, workdir, passes: list[str]):
    from waveopt.passes import PASSES

    missing = [p for p in passes if p not in PASSES]
    if missing:
        pytest.skip(f"passes not available: {', '.join(missing)}")
    path = workdir / f"raw_{'_'.join(passes)}.onnx"
    if not path.exists():
        assert main(["optimize", str(raw_path), "-o", str(path), "--passes", ",".join(passes)]) == 0
    return path


@pytest.fixture(scope="module")
def padded_path(workdir, raw_path):
    """The raw export after pad_dims (which keeps provenance)."""
    return optimized(raw_path, workdir, ["pad_dims"])


@pytest.fixture(scope="module")
def foreign_model():
    pytest.importorskip("torch")
    from foreign_graphs_profile import torch_step_loop_model

    return torch_step_loop_model()


@pytest.fixture(scope="module")
def foreign_path(workdir, foreign_model):
    path = workdir / "foreign.onnx"
    onnx.save(foreign_model, path)
    return path


@pytest.fixture(scope="module")
def raw_profile(raw_path):
    return profile_model(raw_path, frames=2, runs=2)


@pytest.fixture(scope="module")
def foreign_profile(foreign_path):
    return profile_model(foreign_path, runs=2, dims={"steps": FOREIGN_STEPS})


def unattributed_share(p) -> float:
    kernels = sum(r.profiled_us for r in p.rows if r.module != RUN_OVERHEAD)
    return p.row(UNATTRIBUTED).profiled_us / kernels if any(r.module == UNATTRIBUTED for r in p.rows) else 0.0


# --- our export: provenance ---------------------------------------------------------------------
def test_module_times_add_up_to_the_measured_wall_time(raw_profile):
    p = raw_profile
    assert p.unit == "sample" and p.samples_per_run == 2 * 275
    in_kernels_and_loop = sum(r.profiled_us for r in p.rows if r.module != RUN_OVERHEAD)
    assert in_kernels_and_loop == pytest.approx(p.wall_profiled_us, rel=0.10)
    assert sum(r.profiled_us for r in p.rows) == pytest.approx(p.wall_profiled_us, rel=1e-9)
    # the estimate without the profiler splits the unprofiled wall time
    assert p.profiler_cost_us > 0
    # ... up to the estimates that came out under zero, shown as 0 and named in a note
    raised = sum(float(us) for note in p.notes for us in re.findall(r"est\. ([0-9.]+) us under", note))
    assert sum(r.est_us or 0 for r in p.rows) == pytest.approx(p.wall_unprofiled_us + raised, rel=1e-6, abs=0.01)


def test_every_wavernn_module_is_timed_and_attributed(raw_profile):
    p = raw_profile
    for module in WAVERNN_MODULES + ["loop overhead"]:
        assert p.row(module).profiled_us > 0, module
    assert unattributed_share(p) < 0.05
    assert p.row("rnn1").kernel_calls == pytest.approx(15, abs=0.05)  # 2 Gemm, 2 Split, 11 gate ops


def test_macs_and_weights_per_module_come_from_the_graph(raw_profile, exports):
    hp = CONFIGS["raw"]
    rnn, fc, aux, classes = hp.rnn_dims, hp.fc_dims, hp.aux_dims, hp.n_classes
    p = raw_profile
    assert p.row("I").macs == (hp.feat_dims + aux + 1) * rnn
    assert p.row("rnn1").macs == 6 * rnn * rnn
    assert p.row("rnn2").macs == 3 * (rnn + aux) * rnn + 3 * rnn * rnn
    assert p.row("fc3").macs == fc * classes
    step_modules = ["I", "rnn1", "rnn2", "fc1", "fc2", "fc3"]
    assert sum(p.row(m).macs for m in step_modules) == graph_stats(exports("raw")).macs_per_step
    assert p.row("rnn1").weight_bytes == 4 * (6 * rnn * rnn + 6 * rnn)  # weights and biases, fp32
    assert p.row("conditioning").macs > 0


# --- a foreign graph: structure ---------------------------------------------------------------
def test_structure_attributes_a_foreign_graph_without_names(foreign_model):
    model = ir.serde.deserialize_model(foreign_model)
    labels = attribute(model)
    nodes = list(ir.traversal.RecursiveGraphIterator(model.graph))
    assert all(re.fullmatch(r"n\d+", n.name) for n in nodes)  # nothing to guess from
    by_op: dict[str, list[str]] = {}
    for node in nodes:
        by_op.setdefault(node.op_type, []).append(labels[node.name])
    assert sorted(by_op["Gemm"]) == ["I", "fc1", "fc2", "fc3", "rnn1", "rnn1", "rnn2", "rnn2"]
    assert sorted(by_op["Sigmoid"]) == ["rnn1", "rnn1", "rnn2", "rnn2"]
    assert sorted(by_op["Tanh"]) == ["conditioning", "rnn1", "rnn2"]
    assert by_op["Softmax"] == ["sampling"] and by_op["CumSum"] == ["sampling"]
    assert sorted(by_op["Relu"]) == ["fc1", "fc2"]
    assert by_op["MatMul"] == ["conditioning"]
    assert sorted(by_op["Gather"]) == ["loop glue", "loop glue"]
    assert UNATTRIBUTED not in labels.values()


@pytest.mark.parametrize("name", ["raw", "mol"])
def test_structure_alone_finds_what_provenance_says(exports, name):
    """Our export without its metadata: the structural rules label every node as provenance does."""
    model = exports(name)
    with_provenance = attribute(ir.serde.deserialize_model(model))
    stripped = onnx.ModelProto.FromString(model.SerializeToString())
    graphs = [stripped.graph]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            del node.metadata_props[:]
            graphs += [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
    assert attribute(ir.serde.deserialize_model(stripped)) == with_provenance


def test_foreign_loop_profile_is_attributed(foreign_profile):
    p = foreign_profile
    assert p.kind == "foreign graph"
    assert p.steps_per_run == FOREIGN_STEPS and p.sequences == 1
    for module in WAVERNN_MODULES + ["postprocess"]:
        assert p.row(module).profiled_us > 0, module
    assert unattributed_share(p) < 0.05
    in_kernels_and_loop = sum(r.profiled_us for r in p.rows if r.module != RUN_OVERHEAD)
    assert in_kernels_and_loop == pytest.approx(p.wall_profiled_us, rel=0.10)
    assert p.row("rnn1").macs == 6 * 32 * 32


# --- output -------------------------------------------------------------------------------------
def test_json_matches_the_table(raw_profile):
    p = raw_profile
    table = format_profile(p)
    data = json.loads(json.dumps(p.as_dict()))
    assert [m["module"] for m in data["modules"]] == [r.module for r in p.rows]
    for entry in data["modules"]:
        line = next(line for line in table.splitlines() if line.split("  ")[0].strip() == entry["module"])
        cells = re.split(r"\s{2,}", line.strip())
        assert cells[1] == fmt_us(entry["profiled_us"]), line
        assert cells[2] == fmt_us(entry["est_us"]), line
        assert cells[3] == ("-" if entry["percent"] is None else f"{entry['percent']:.1f}"), line
        if entry["macs"] is not None:
            assert cells[5] == f"{entry['macs']:,.0f}", line
    assert data["wall_us"]["unprofiled"] == p.wall_unprofiled_us
    assert f"{p.wall_unprofiled_us:.1f}" in table


def test_cli_json_parses(capsys, raw_path):
    code, out, err = cli(capsys, "profile", raw_path, "--json", "--runs", "1")
    assert code == 0, err
    data = json.loads(out)
    modules = {m["module"]: m for m in data["modules"]}
    assert set(WAVERNN_MODULES) <= set(modules)
    assert data["unit"] == "sample" and data["samples_per_run"] == 550
    assert sum(m["profiled_us"] for m in data["modules"]) == pytest.approx(data["wall_us"]["profiled"], rel=1e-6)
    assert data["limits"]["fma_gflops"] > 0


def test_cli_table(capsys, raw_path):
    code, out, err = cli(capsys, "profile", raw_path, "--runs", "1", "--nodes", "5")
    assert code == 0, err
    for module in WAVERNN_MODULES + ["loop overhead", "total"]:
        assert re.search(rf"^{module}\s", out, re.M), module
    assert "without the profiler" in out and "FMA peak" in out
    assert re.search(r"^\(\d+ more\)", out, re.M)  # the node list


def test_compare_before_and_after_a_pass(capsys, raw_path, padded_path):
    code, out, err = cli(capsys, "profile", raw_path, padded_path, "--runs", "1", "--json")
    assert code == 0, err
    data = json.loads(out)
    rows = {r["module"]: r for r in data["comparison"]}
    for module in WAVERNN_MODULES + ["total (wall)"]:
        row = rows[module]
        if row["a_us"] > 0 and row["b_us"] > 0:  # a small module's estimate can come out <= 0
            assert row["ratio"] == pytest.approx(row["b_us"] / row["a_us"])
        else:
            assert row["ratio"] is None
    assert rows["total (wall)"]["ratio"] is not None
    for side in ("a", "b"):
        assert all(m["profiled_us"] > 0 for m in data[side]["modules"] if m["module"] in WAVERNN_MODULES)
    assert rows["rnn1"]["a_us"] == pytest.approx(next(m["est_us"] for m in data["a"]["modules"]
                                                      if m["module"] == "rnn1"))
    assert data["b"]["modules"][0]["module"] == "conditioning"
    code, out, err = cli(capsys, "profile", raw_path, padded_path, "--runs", "1")
    assert code == 0, err
    assert re.search(r"^total \(wall\)\s+\S+\s+\S+\s+\d+\.\d\dx$", out, re.M), out
    assert f"A  {raw_path}" in out and f"B  {padded_path}" in out


def test_hoisted_products_keep_their_modules(raw_path, workdir):
    """After the aux projections leave the Loop, their MatMuls run once per run in the main graph."""
    path = optimized(raw_path, workdir, ["split_concat_matmul", "hoist_aux_projections"])
    p = profile_model(path, runs=1, calibrate=False)
    hoisted = [n for n in p.nodes if n.op in ("MatMul", "Gemm", "FusedGemm") and n.graph == "main"]
    assert hoisted and {n.module for n in hoisted} <= {"I", "rnn2", "fc1", "fc2"}
    assert unattributed_share(p) < 0.05
    for module in ("I", "rnn2", "fc1", "fc2"):  # their per-sample MACs count the hoisted part too
        assert p.row(module).macs > 0


def test_trace_is_a_chrome_trace_with_modules(capsys, raw_path, workdir):
    trace = workdir / "trace.json"
    code, out, err = cli(capsys, "profile", raw_path, "--runs", "1", "--warmup", "1", "--trace", trace)
    assert code == 0, err
    events = json.loads(trace.read_text())
    spans = [e for e in events if e.get("ph") == "X"]
    modules = {e["cat"] for e in spans}
    assert set(WAVERNN_MODULES) <= modules
    assert all({"ts", "dur", "pid", "tid", "name"} <= set(e) for e in spans)
    runs = [e for e in spans if e["name"] == "model_run"]
    assert len(runs) == 1  # the warm-up run is not in the trace
    rnn1 = [e for e in spans if e["cat"] == "rnn1"]
    assert rnn1 and all(e["name"].startswith("rnn1: ") and e["args"]["op"] for e in rnn1)


# --- extension point for the fused op's stage timers ------------------------------------------
def test_merge_stage_timers_moves_time_between_rows(raw_profile):
    p = copy.deepcopy(raw_profile)
    node = next(n for n in p.nodes if n.module == "rnn1" and n.op == "Gemm")
    before = {r.module: r.profiled_us for r in p.rows}
    seconds = 0.5 * node.profiled_us * 1e-6 * p.runs * p.samples_per_run
    merge_stage_timers(p, node.name, {"sampling": seconds, "gru gates": seconds / 2})
    assert p.row("rnn1").profiled_us == pytest.approx(before["rnn1"] - 0.75 * node.profiled_us)
    assert p.row("sampling").profiled_us == pytest.approx(before["sampling"] + 0.5 * node.profiled_us)
    assert p.row("gru gates").source == "op timers"
    assert sum(r.profiled_us for r in p.rows) == pytest.approx(sum(before.values()))


def test_stage_timers_hook_reads_the_measured_runs_only(raw_path):
    configured, reads = [], []

    def configure(options):  # where the fused op's timers will be switched on
        options.add_session_config_entry("waveopt.test.stage_timers", "1")
        configured.append(options)

    def stage_timers(session):  # cumulative totals, as the op will keep them
        reads.append(session)
        return {"step/node_linear_1": {"rnn1 gemv": 0.002 * len(reads)}}

    p = profile_model(raw_path, runs=1, calibrate=False, configure=configure, stage_timers=stage_timers)
    assert len(configured) == 1 and len(reads) == 2
    row = p.row("rnn1 gemv")
    assert row.source == "op timers"
    assert row.profiled_us == pytest.approx(0.002 * 1e6 / p.samples_per_run)


# --- limits -------------------------------------------------------------------------------------
def test_bandwidth_probe():
    limits = probe_limits()
    assert sorted(limits.read_gbps) == [1 * MB, 3 * MB, 12 * MB, 16 * MB]
    assert all(rate > 0.1 for rate in limits.read_gbps.values())
    assert limits.fma_gflops > 0.1
    assert limits.read_rate(2 * MB)[1] == 3 * MB and limits.read_rate(100 * MB)[1] == 16 * MB


# --- bad input ----------------------------------------------------------------------------------
def test_model_without_a_loop_is_profiled_per_node(capsys, workdir):
    path = workdir / "cnn.onnx"
    onnx.save(cnn_model(), path)
    code, out, err = cli(capsys, "profile", path, "--runs", "1")
    assert code == 0, err
    assert "no Loop: times are per run" in out
    assert "us/run" in out and re.search(r"^node\s+op\s+module", out, re.M)
    assert "Conv" in out


@pytest.mark.parametrize("args, needles", [
    (["{dir}/missing.onnx"], ["no such file"]),
    (["{raw}", "{raw}", "{raw}"], ["give one model, or two"]),
    (["{raw}", "--runs", "0"], ["--runs must be at least 1"]),
    (["{raw}", "--frames", "1"], ["--frames must be at least 2"]),
    (["{foreign}", "--dim", "steps"], ["--dim takes NAME=N"]),
    (["{foreign}", "--dim", "time=3"], ["--dim time", "steps"]),
    (["{foreign}", "--inputs", "{dir}/nothing.npz"], ["no such inputs file"]),
    (["{raw}", "--trace", "{dir}/no_such_dir/t.json"], ["does not exist"]),
])
def test_bad_input_is_one_line(capsys, raw_path, foreign_path, workdir, args, needles):
    args = [a.format(raw=raw_path, foreign=foreign_path, dir=workdir) for a in args]
    code, _, err = cli(capsys, "profile", *args)
    assert_one_line_error(code, err, *needles)


def test_inputs_ort_cannot_run_are_one_line(capsys, foreign_path, workdir):
    import numpy as np

    path = workdir / "bad_inputs.npz"
    np.savez(path, features=np.zeros((5, 6), np.float32))  # rank 2 instead of 3
    code, _, err = cli(capsys, "profile", foreign_path, "--inputs", path, "--runs", "1")
    assert_one_line_error(code, err, "ONNX Runtime cannot run", "foreign.onnx")


def test_foreign_inputs_from_npz(capsys, foreign_path, workdir):
    import numpy as np

    path = workdir / "inputs.npz"
    np.savez(path, features=np.zeros((50, 1, 6), np.float32), noise=np.full((50, 1, 2), 0.5, np.float32))
    code, out, err = cli(capsys, "profile", foreign_path, "--inputs", path, "--runs", "1", "--json", "--no-estimate")
    assert code == 0, err
    data = json.loads(out)
    assert data["steps_per_run"] == 50 and data["profiler_cost_us_per_kernel"] is None
    assert all(m["est_us"] is None for m in data["modules"])
