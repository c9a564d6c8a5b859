import json
import re

from onnx import numpy_helper
from onnx_builders import ar_loop_model, cnn_model, gru_model, mac_model, nested_model

from waveopt.graph import to_ir
from waveopt.report import GraphStats, format_comparison, format_stats, graph_stats


def test_macs_of_a_wavernn_sized_step():
    stats = graph_stats(mac_model())
    # MatMul(x[B,113], W[113,512]) + Gemm(transB) with [1536,512] + MatMul with Constant [512,1536]
    assert stats.macs_per_step == 113 * 512 + 2 * 512 * 1536
    assert stats.unknown_mac_ops == []


def test_macs_of_a_gru_op_and_an_uncountable_matmul():
    hidden, features = 16, 5
    stats = graph_stats(gru_model(hidden, features))
    assert stats.macs_per_step == 3 * hidden * features + 3 * hidden * hidden
    assert stats.unknown_mac_ops == ["MatMul (mystery)"]


def test_macs_count_only_loop_bodies():
    assert graph_stats(ar_loop_model(hidden=8, features=3, classes=16)).macs_per_step == (
        (8 + 3 + 1) * 8 + 8 * 16
    )
    assert graph_stats(cnn_model()).macs_per_step == 0  # its Convs are outside any Loop


def test_op_counts_inside_and_outside_loop_bodies():
    stats = graph_stats(ar_loop_model())
    assert stats.n_ops_outside_loop == 11
    assert stats.n_ops_in_loop_body == 31
    assert stats.ops_outside_loop["Loop"] == 1
    assert stats.ops_in_loop_body["Tanh"] == 2
    assert "Tanh" not in stats.ops_outside_loop
    nested = graph_stats(nested_model())  # an If inside a Loop body counts as inside
    assert nested.ops_in_loop_body == {"Identity": 3, "If": 1, "Neg": 1}
    assert nested.ops_outside_loop == {"Constant": 1, "Identity": 1, "If": 1, "Loop": 1}


def test_parameters_count_initializers_and_constants_everywhere():
    model = ar_loop_model()
    weights = sum(numpy_helper.to_array(t).size for t in model.graph.initializer)
    body = model.graph.node[-1].attribute[0].g
    constants = [n for n in [*model.graph.node, *body.node] if n.op_type == "Constant"]
    constant_sizes = sum(numpy_helper.to_array(n.attribute[0].t).size for n in constants)
    assert graph_stats(model).parameters == weights + constant_sizes == 259
    assert graph_stats(mac_model()).parameters == 113 * 512 + 2 * 512 * 1536 + 4


def test_stats_accept_ir_models_and_do_not_modify_them():
    proto = ar_loop_model()
    before = proto.SerializeToString()
    assert graph_stats(proto) == graph_stats(to_ir(proto))
    assert proto.SerializeToString() == before


def test_file_size_and_json():
    stats = graph_stats(cnn_model(), file_size=1234)
    data = json.loads(json.dumps(stats.as_dict()))
    assert data["file_size"] == 1234
    assert data["n_ops_outside_loop"] == 4
    assert data["ops_outside_loop"]["Conv"] == 2
    assert data["parameters"] == 4 * 2 * 9 + 4 + 3 * 4 * 9


def _stats(outside, inside, macs=100, params=1000, size=None):
    return GraphStats(outside, inside, macs, params, size)


def test_format_comparison_rows_and_alignment():
    before = _stats({"Loop": 1, "Shape": 2}, {"Tanh": 2, "MatMul": 2}, size=4000)
    after = _stats({"Loop": 1, "Shape": 1}, {"Tanh": 1, "MatMul": 2}, size=3000)
    lines = format_comparison(before, after).splitlines()
    assert lines[0].split() == ["before", "after", "change"]
    cells = [re.split(r"\s{2,}", line.strip()) for line in lines[1:]]
    rows = {cell[0]: cell[1:] for cell in cells}
    assert rows["ops outside loop"] == ["3", "2", "-1 (-33.3%)"]
    assert rows["ops inside loop body"] == ["4", "3", "-1 (-25.0%)"]
    assert rows["per-step MACs"] == ["100", "100", "0"]
    assert rows["parameters"] == ["1,000", "1,000", "0"]
    assert rows["file size (bytes)"] == ["4,000", "3,000", "-1,000 (-25.0%)"]
    assert rows["Shape (outside loop)"] == ["2", "1", "-1 (-50.0%)"]
    assert rows["Tanh (loop body)"] == ["2", "1", "-1 (-50.0%)"]
    assert len(rows) == 7
    assert not any("MatMul" in line or "Loop (" in line for line in lines)  # unchanged types
    assert len({len(line) for line in lines}) == 1  # right-aligned columns end together


def test_format_comparison_handles_missing_sizes_and_new_ops():
    text = format_comparison(_stats({}, {"Add": 1}), _stats({}, {"Add": 1, "Mul": 3}))
    assert "file size (bytes)" in text and "n/a" in text
    mul = next(line for line in text.splitlines() if "Mul (loop body)" in line)
    assert mul.split()[-3:] == ["0", "3", "+3"]


def test_format_stats_lists_ops_and_unknowns():
    text = format_stats(graph_stats(gru_model()))
    assert "GRU (loop body)" in text
    assert "MACs not counted" in text and "MatMul (mystery)" in text
    macs = next(line for line in text.splitlines() if line.startswith("per-step MACs"))
    assert macs.split()[-1] == f"{3 * 16 * 5 + 3 * 16 * 16:,}"
