"""Written models carry the lowest IR version their opsets need, so older runtimes load them."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from waveopt.graph import lowest_ir_version, save_model


def _add_model(opset: int, ir_version: int, initializer_type: int = TensorProto.FLOAT,
               domains: tuple[str, ...] = ()) -> onnx.ModelProto:
    """y = x + c, with c an initializer of ``initializer_type``, cast to float when it is not."""
    c = helper.make_tensor("c", initializer_type, [1], [1.0] if initializer_type == TensorProto.FLOAT else [0])
    nodes = [helper.make_node("Cast", ["c"], ["cf"], to=TensorProto.FLOAT), helper.make_node("Add", ["x", "cf"], ["y"])]
    graph = helper.make_graph(nodes, "add", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [c])
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    return helper.make_model(graph, opset_imports=opsets, ir_version=ir_version)


@pytest.mark.parametrize("opset, expected", [(13, 7), (18, 8), (20, 9), (21, 10)])
def test_lowest_ir_version_follows_onnx_version_table(opset, expected):
    assert lowest_ir_version(_add_model(opset, ir_version=11)) == expected


def test_custom_domains_do_not_raise_the_version():
    assert lowest_ir_version(_add_model(18, ir_version=10, domains=("waveopt.ops",))) == 8


def test_never_raises_the_version():
    assert lowest_ir_version(_add_model(18, ir_version=7)) == 7


def test_newer_element_types_keep_the_version():
    model = _add_model(18, ir_version=10, initializer_type=TensorProto.FLOAT8E4M3FN)
    assert lowest_ir_version(model) == 10


def test_newer_type_inside_a_subgraph_keeps_the_version():
    inner = helper.make_graph([helper.make_node("Cast", ["x"], ["z"], to=TensorProto.INT4)], "then", [],
                              [helper.make_tensor_value_info("z", TensorProto.INT4, [1])])
    model = _add_model(18, ir_version=10)
    model.graph.node.append(helper.make_node("If", ["cond"], ["z"], then_branch=inner, else_branch=inner))
    assert lowest_ir_version(model) == 10


def test_save_model_writes_the_lowest_version_and_leaves_the_model_alone(tmp_path):
    model = _add_model(18, ir_version=10)
    save_model(model, tmp_path / "m.onnx")
    assert onnx.load(tmp_path / "m.onnx").ir_version == 8
    assert model.ir_version == 10
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": np.array([2.0], np.float32)})
    assert y.tolist() == [3.0]
    assert numpy_helper.to_array(onnx.load(tmp_path / "m.onnx").graph.initializer[0]).tolist() == [1.0]


def test_exported_wavernn_is_ir_8(exports):
    """Opset 18 needs IR 8; ORT 1.17 refused the IR 10 the exporter used to write."""
    assert exports("raw").ir_version == 8
