"""Stage timers of the fused WaveRNNLoop (WAVEOPT_STAGE_TIMERS) and ``waveopt profile`` on it.

Timings on a shared machine are noisy: the checks are lenient (the stages must add up to
the op's kernel time within 20%), never how fast anything is.
"""

from __future__ import annotations

import json

import onnx
import pytest

ort = pytest.importorskip("onnxruntime")

import waveopt  # noqa: E402
from waveopt import ops  # noqa: E402
from waveopt.cli import main  # noqa: E402
from waveopt.profile.inputs import profile_inputs  # noqa: E402
from waveopt.profile.native import ENV, STAGES, fused_loop_nodes, read_stage_lines  # noqa: E402
from waveopt.profile.profiler import profile_model  # noqa: E402

from model_fixtures import exports  # noqa: E402,F401

pytestmark = pytest.mark.skipif(not ops.built(), reason="native ops library not built (waveopt ops build)")


@pytest.fixture(scope="module")
def native_path(tmp_path_factory, exports):  # noqa: F811
    model = waveopt.optimize(exports("raw"), preset="native").model
    assert fused_loop_nodes(model)
    path = tmp_path_factory.mktemp("native") / "raw_native.onnx"
    onnx.save(model, str(path))
    return path


def _run(path, monkeypatch, timer_file=None, runs=2):
    if timer_file is None:
        monkeypatch.delenv(ENV, raising=False)
    else:
        monkeypatch.setenv(ENV, str(timer_file))
    model = onnx.load(str(path))
    feed, _ = profile_inputs(model, 2, {}, None)
    session = waveopt.runtime.session(model)
    for _ in range(runs):
        session.run(None, feed)
    return model


def test_timers_off_write_nothing(native_path, tmp_path, monkeypatch):
    target = tmp_path / "stages.jsonl"
    monkeypatch.delenv(ENV, raising=False)
    model = onnx.load(str(native_path))
    feed, _ = profile_inputs(model, 2, {}, None)
    session = waveopt.runtime.session(model)  # created with the variable unset: timers off
    monkeypatch.setenv(ENV, str(target))  # read at kernel creation only, so still off
    session.run(None, feed)
    assert not target.exists()


def test_timers_on_write_a_line_per_compute(native_path, tmp_path, monkeypatch):
    target = tmp_path / "stages.jsonl"
    model = _run(native_path, monkeypatch, target, runs=3)
    lines = read_stage_lines(target)
    assert len(lines) == 3
    node = fused_loop_nodes(model)[0]
    for line in lines:
        assert line["node"] == node and line["steps"] > 0 and line["batch"] == 1
        assert set(line["seconds"]) == set(STAGES)
        assert all(v > 0 for v in line["seconds"].values())


def _stage_check(data):
    rows, nodes = data["modules"], data["nodes"]
    by_module = {r["module"]: r for r in rows}
    for stage in STAGES:
        assert by_module[stage]["source"] == "op timers", stage
        assert by_module[stage]["profiled_us"] > 0, stage
    loop = [n for n in nodes if n["op"] == "WaveRNNLoop"]
    assert len(loop) == 1
    stages = data["stages"][loop[0]["name"]]  # the op's own share of the stage rows
    assert set(stages) == set(STAGES) and all(v > 0 for v in stages.values())
    stages_us = sum(stages.values())
    kernel_us = loop[0]["profiled_us"]
    assert 0.8 * kernel_us <= stages_us <= 1.02 * kernel_us, (stages_us, kernel_us)


def test_profile_reports_every_stage(native_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    profile = profile_model(native_path, runs=3, calibrate=False)
    assert profile.unit == "sample" and profile.steps_per_run > 0
    data = profile.as_dict()
    _stage_check(data)
    import os
    assert ENV not in os.environ  # restored


def test_profile_cli_json_and_table(native_path, capsys):
    assert main(["profile", str(native_path), "--runs", "2", "--no-estimate", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    _stage_check(data)
    assert main(["profile", str(native_path), "--runs", "2", "--no-estimate"]) == 0
    out = capsys.readouterr().out
    for stage in STAGES:
        assert any(line.startswith(stage + " ") for line in out.splitlines()), stage
