import os

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import numpy_helper
from onnx_builders import ar_loop_model, nested_model

import waveopt.graph as graph_mod
from waveopt.errors import WaveoptError
from waveopt.graph import iter_graphs, iter_nodes, load_model, loop_nodes, save_model, to_ir, to_proto


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_load_missing_file(tmp_path):
    with pytest.raises(WaveoptError, match="no such file: .*nope.onnx"):
        load_model(tmp_path / "nope.onnx")


def test_load_directory(tmp_path):
    with pytest.raises(WaveoptError, match="is a directory"):
        load_model(tmp_path)


@pytest.mark.parametrize(
    "data",
    [
        b"",  # parses as an empty ModelProto
        b"\x08\x07",  # ir_version 7 and nothing else: parses, but has no graph
        b"this is not an onnx model at all \xff\xfe",
        bytes(range(256)) * 4,
    ],
)
def test_load_garbage(tmp_path, data):
    path = _write(tmp_path / "bad.onnx", data)
    with pytest.raises(WaveoptError, match=r"bad.onnx is not a valid ONNX model \(.+\)") as info:
        load_model(path)
    assert "\n" not in str(info.value)


def test_garbage_that_protobuf_accepts_is_still_rejected(tmp_path):
    data = b"\x08\x07\x12\x03abc"  # ir_version 7, producer_name "abc"
    onnx.load_from_string(data)  # protobuf is happy ...
    with pytest.raises(WaveoptError, match="no opset_import|no graph"):
        load_model(_write(tmp_path / "m.onnx", data))  # ... we are not


def test_load_truncated(tmp_path):
    data = ar_loop_model().SerializeToString()
    path = _write(tmp_path / "cut.onnx", data[: len(data) // 2])
    with pytest.raises(WaveoptError, match="cut.onnx is not a valid ONNX model"):
        load_model(path)


def test_load_does_not_modify_the_file(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(ar_loop_model(), path)
    before, mtime = path.read_bytes(), path.stat().st_mtime_ns
    model = load_model(path)
    assert model.SerializeToString() == before
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime


def test_load_external_data(tmp_path):
    model = ar_loop_model()
    expected = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    path = tmp_path / "ext.onnx"
    onnx.save(model, path, save_as_external_data=True, location="ext.data", size_threshold=0)
    assert (tmp_path / "ext.data").exists()
    loaded = load_model(path)
    got = {t.name: numpy_helper.to_array(t) for t in loaded.graph.initializer}
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value)


def test_load_missing_external_data(tmp_path):
    path = tmp_path / "ext.onnx"
    onnx.save(ar_loop_model(), path, save_as_external_data=True, location="ext.data", size_threshold=0)
    (tmp_path / "ext.data").unlink()
    with pytest.raises(WaveoptError, match="cannot load external data"):
        load_model(path)


@pytest.mark.parametrize("as_ir", [False, True])
def test_save_round_trip_leaves_no_temp_file(tmp_path, as_ir):
    model = ar_loop_model()
    path = tmp_path / "out.onnx"
    save_model(to_ir(model) if as_ir else model, path)
    assert os.listdir(tmp_path) == ["out.onnx"]
    loaded = load_model(path)
    assert [n.op_type for n in loaded.graph.node] == [n.op_type for n in model.graph.node]


def test_save_failure_keeps_original_and_cleans_up(tmp_path, monkeypatch):
    path = tmp_path / "out.onnx"
    path.write_bytes(b"original")

    def broken_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(graph_mod.os, "fsync", broken_fsync)
    with pytest.raises(WaveoptError, match="cannot write .*out.onnx"):
        save_model(ar_loop_model(), path)
    assert path.read_bytes() == b"original"
    assert os.listdir(tmp_path) == ["out.onnx"]


def test_save_into_missing_directory(tmp_path):
    with pytest.raises(WaveoptError, match="cannot write"):
        save_model(ar_loop_model(), tmp_path / "no" / "such" / "dir.onnx")


def test_to_ir_and_to_proto():
    proto = ar_loop_model()
    model = to_ir(proto)
    assert isinstance(model, ir.Model)
    assert to_ir(model) is model
    assert to_proto(proto) is proto
    back = to_proto(model)
    assert isinstance(back, onnx.ModelProto)
    assert [o.name for o in back.graph.output] == ["samples", "h_last"]
    with pytest.raises(TypeError):
        to_ir("model.onnx")


def test_iter_graphs_and_loop_nodes_reach_nested_subgraphs():
    graph = to_ir(nested_model()).graph
    names = [g.name for g in iter_graphs(graph)]
    assert names[0] == "nested"
    assert sorted(names[1:]) == ["body", "else", "in_else", "in_then", "then"]
    assert [n.op_type for n in loop_nodes(graph)] == ["Loop"]  # inside the If's then-branch


def test_iter_nodes_marks_loop_bodies():
    graph = to_ir(nested_model()).graph
    inside = sorted(n.op_type for n, in_loop in iter_nodes(graph) if in_loop)
    outside = sorted(n.op_type for n, in_loop in iter_nodes(graph) if not in_loop)
    assert inside == ["Identity", "Identity", "Identity", "If", "Neg"]
    assert outside == ["Constant", "Identity", "If", "Loop"]
