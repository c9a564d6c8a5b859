"""One cost model (issue 13, bug 5): optimize's table, profile and bench count the same MACs.

The small RAW export and its portable, native and int8 forms, as a user makes them with the
CLI; the counts are compared across commands and with numbers computed by hand from the
model's sizes.
"""

from __future__ import annotations

import json
import re

import onnx
import onnx_ir as ir
import pytest

from cli_helpers import cli
from model_fixtures import SMALL
from waveopt import ops
from waveopt.costs import LoopInvariance, loop_step_macs
from waveopt.report import graph_stats

H, FC, AUX, FEAT, CLASSES = SMALL["rnn_dims"], SMALL["fc_dims"], SMALL["res_out_dims"] // 4, 80, 512
# fatchord's step: I, two GRUs (input and hidden products), fc1..fc3.
LOOP_MACS = ((1 + FEAT + AUX) * H + 6 * H * H + 3 * (H + AUX) * H + 3 * H * H
             + (H + AUX) * FC + (FC + AUX) * FC + FC * CLASSES)
# WaveRNNLoop per step: W_hh1, W_x2, W_hh2 (3H x H each), W_fc1..3, and the rank-1 terms u1..u3.
FUSED_LOOP_MACS = 3 * 3 * H * H + H * FC + FC * FC + FC * CLASSES + 3 * H + 3 * H + FC
FRAMES = 2
needs_native = pytest.mark.skipif(not ops.built(), reason="native ops not built (make native)")


@pytest.fixture(scope="module")
def forms(tmp_path_factory, exports):
    folder = tmp_path_factory.mktemp("costs")
    paths = {"plain": folder / "small.onnx"}
    onnx.save(exports("raw"), paths["plain"])
    return folder, paths


def _optimized(capsys, forms, form):
    folder, paths = forms
    if form not in paths:
        args = {"portable": [], "native": ["--target", "native"],
                "int8": ["--target", "native", "--quant", "int8", "--force"]}[form]
        paths[form] = folder / f"small.{form}.onnx"
        code, stdout, err = cli(capsys, "optimize", paths["plain"], "-o", paths[form], "--check-frames", FRAMES, *args)
        assert code == 0, err
        paths[f"{form}.table"] = stdout
    return paths[form], paths.get(f"{form}.table")


def _table_row(table: str, label: str) -> list[int]:
    line = next(line for line in table.splitlines() if line.startswith(label))
    return [int(n.replace(",", "")) for n in re.findall(r"(?<![+\-\d,])\d[\d,]*(?= |$)", line[len(label):])][:2]


def test_hand_computed_counts_of_the_small_export(capsys, forms):
    stats = graph_stats(onnx.load(forms[1]["plain"]))
    assert stats.macs_per_step == LOOP_MACS == 87_104
    assert not stats.unknown_mac_ops


@needs_native
def test_native_counts_include_the_fused_ops(capsys, forms):
    path, table = _optimized(capsys, forms, "native")
    stats = graph_stats(onnx.load(path), frames=FRAMES)
    assert stats.macs_per_step == FUSED_LOOP_MACS  # the recurrence, per step
    model = ir.load(path)
    dense = [n for n in model.graph if n.op_type == "FusedDense"]
    per_row = sum(n.inputs[-2].const_value.size for n in dense)  # each runs once per step
    plain = graph_stats(onnx.load(forms[1]["plain"]), frames=FRAMES)
    conditioning = plain.macs_per_sample - LOOP_MACS
    assert stats.macs_per_sample == pytest.approx(FUSED_LOOP_MACS + per_row + conditioning)
    assert _table_row(table, "per-step MACs")[1] == FUSED_LOOP_MACS


@pytest.mark.parametrize("form", ["plain", "portable", pytest.param("native", marks=needs_native),
                                  pytest.param("int8", marks=needs_native)])
def test_optimize_profile_and_bench_agree(capsys, forms, form):
    path = forms[1]["plain"] if form == "plain" else _optimized(capsys, forms, form)[0]
    expected = graph_stats(onnx.load(path), frames=FRAMES).macs_per_sample
    code, stdout, err = cli(capsys, "profile", path, "--frames", FRAMES, "--runs", "1", "--warmup", "0",
                            "--no-estimate", "--json")
    assert code == 0, err
    profile = json.loads(stdout)
    assert sum(m["macs"] or 0 for m in profile["modules"]) == pytest.approx(expected, rel=1e-9)
    assert not any("MACs not counted" in note for note in profile["notes"])
    glue = next((m for m in profile["modules"] if m["module"] == "loop glue"), None)
    assert glue is None or glue["weight_bytes"] < 4096  # the fused loop's weights belong to its modules
    code, stdout, err = cli(capsys, "bench", path, "--frames", FRAMES, "--repeats", "1", "--warmup", "0")
    assert code == 0, err
    assert f"{expected:,.0f} MACs/sample" in stdout
    if form != "plain":
        before, after = _table_row(forms[1][f"{form}.table"], f"MACs/sample, whole model ({FRAMES} frames)")
        assert after == round(expected)
        assert before == round(graph_stats(onnx.load(forms[1]["plain"]), frames=FRAMES).macs_per_sample)


@needs_native
def test_int8_weights_are_counted_at_one_byte(capsys, forms):
    native, _ = _optimized(capsys, forms, "native")
    int8, _ = _optimized(capsys, forms, "int8")
    sizes = {}
    for name, path in (("native", native), ("int8", int8)):
        code, stdout, err = cli(capsys, "profile", path, "--frames", FRAMES, "--runs", "1", "--warmup", "0",
                                "--no-estimate", "--json")
        assert code == 0, err
        sizes[name] = {m["module"]: m["weight_bytes"] for m in json.loads(stdout)["modules"]}
    assert sizes["native"]["fc3"] == FC * CLASSES * 4 + CLASSES * 4
    assert sizes["int8"]["fc3"] == FC * CLASSES * 1 + CLASSES * 4


def test_gru_with_weights_computed_in_the_body_is_counted():
    """A GRU op whose W and R come from Slice/Concat of outer weights (no inferred shape)."""
    hidden, width = 16, 5
    x = ir.Value(name="x", shape=ir.Shape([1, 1, width]), type=ir.TensorType(ir.DataType.FLOAT))
    w, r = ir.Value(name="w"), ir.Value(name="r")  # computed: shape unknown
    gru = ir.Node("", "GRU", [x, w, r], attributes=[ir.AttrInt64("hidden_size", hidden)], num_outputs=2)
    body = ir.Graph([x], [], nodes=[gru])
    assert loop_step_macs(gru, LoopInvariance(body)) == 3 * hidden * (width + hidden)
