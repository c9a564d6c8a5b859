"""What optimize leaves in its models and says about them (issue 13, bugs 8 and 9), and
profile's times that must never be negative."""

from __future__ import annotations

import onnx
import onnx_ir as ir
import pytest

from cli_helpers import cli
from waveopt import ops
from waveopt.graph import iter_graphs
from waveopt.profile.bandwidth import MachineLimits
from waveopt.profile.profiler import ModuleRow, Profile, clamp_below_noise
from waveopt.profile.table import format_profile
from waveopt.report import graph_stats

needs_native = pytest.mark.skipif(not ops.built(), reason="native ops not built (make native)")


@pytest.fixture(scope="module")
def folder(tmp_path_factory, exports):
    path = tmp_path_factory.mktemp("optimized")
    onnx.save(exports("raw"), path / "small.onnx")
    return path


def dead_initializers(path) -> list[str]:
    model = ir.load(path)
    return [f"{graph.name}:{name}" for graph in iter_graphs(model.graph)
            for name, value in graph.initializers.items()
            if not value.uses() and not value.is_graph_input() and not value.is_graph_output()]


@needs_native
def test_lowering_an_optimized_model_does_not_grow_it(capsys, folder):
    """optimize model.opt.onnx --target native: about the size of lowering the raw export."""
    made = {}
    for name, source, args in (("opt", "small.onnx", []), ("native", "small.onnx", ["--target", "native"]),
                               ("opt_native", "small.opt.onnx", ["--target", "native", "--check"])):
        made[name] = folder / f"small.{name}.onnx".replace("small.opt_native", "small.opt.native")
        code, stdout, err = cli(capsys, "optimize", folder / source, "-o", made[name], "--check-frames", "2", *args)
        assert code == 0, err
    for path in [folder / "small.onnx", *made.values()]:
        assert dead_initializers(path) == [], path
    native = graph_stats(onnx.load(made["native"]), frames=None).parameters
    twice = graph_stats(onnx.load(made["opt_native"]), frames=None).parameters
    assert twice <= 1.05 * native, (twice, native)
    model = ir.load(made["opt_native"])
    dense = [n for n in model.graph if n.op_type == "FusedDense"]
    for node in dense:  # no identity matrix re-projecting an already hoisted projection
        weight = node.inputs[-2].const_value.numpy()
        assert not (weight.shape[0] == weight.shape[1] and (weight == 1).sum() == weight.shape[0]
                    and (weight != 0).sum() == weight.shape[0]), node.name


def test_check_each_says_what_it_checked(capsys, folder):
    code, stdout, err = cli(capsys, "optimize", folder / "small.onnx", "-o", folder / "each.onnx",
                            "--check-each", "--check-frames", "2")
    assert code == 0, err
    lines = stdout.splitlines()
    for name in ("split_concat_matmul", "hoist_aux_projections", "fold_linear"):
        at = next(i for i, line in enumerate(lines) if line.strip().startswith(name))
        check = lines[at + 1].strip()
        assert check.startswith("check: outputs match"), check
        assert "max abs diff" in check and "samples: ok" in check, check
    assert dead_initializers(folder / "each.onnx") == []


def _profile(rows):
    return Profile(model="m.onnx", kind="waveopt RAW export", inputs="demo", feed_shapes={}, threads=1, runs=1,
                   warmup=0, unit="sample", steps_per_run=100, sequences=1, wall_profiled_us=10.0,
                   wall_unprofiled_us=5.0, profiler_cost_us=1.0, rows=rows, nodes=[],
                   limits=MachineLimits({1 << 20: 10.0}, 50.0), total_weight_bytes=0, notes=[])


def test_profile_never_shows_a_negative_time():
    profile = _profile([ModuleRow("rnn1", profiled_us=4.0, est_us=5.2),
                        ModuleRow("loop overhead", profiled_us=1.0, est_us=-0.3)])
    clamp_below_noise(profile)
    assert [r.est_us for r in profile.rows] == [5.2, 0.0]
    assert any("within noise" in note and "loop overhead" in note for note in profile.notes)
    table = format_profile(profile)
    assert "-0.3" not in table and not any(cell.startswith("-") and cell[1:2].isdigit()
                                           for line in table.splitlines() for cell in line.split())
