"""A foreign WaveRNN-like Loop graph for the profile tests: no waveopt metadata, opaque names.

The step is a plain torch module (Linear I, two GRUCells, three Linear layers, inverse-CDF
sampling), exported with the TorchScript exporter (``dynamo=False``); an ONNX Loop built
here runs it once per sample. The main graph conditions the features (MatMul + Tanh)
before the Loop and scales the samples after it. Every node, value and weight is renamed
(n0, v0, w0, ...), so only the graph's structure can tell the modules apart.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _torch_step(feat: int, rnn: int, fc: int, classes: int, seed: int) -> onnx.ModelProto:
    import torch
    from torch import nn

    class Step(nn.Module):
        def __init__(self):
            super().__init__()
            self.I = nn.Linear(feat + 1, rnn)
            self.rnn1 = nn.GRUCell(rnn, rnn)
            self.rnn2 = nn.GRUCell(rnn, rnn)
            self.fc1 = nn.Linear(rnn, fc)
            self.fc2 = nn.Linear(fc, fc)
            self.fc3 = nn.Linear(fc, classes)

        def forward(self, x, m, h1, h2, u):
            y = self.I(torch.cat([x, m], dim=1))
            h1 = self.rnn1(y, h1)
            y = y + h1
            h2 = self.rnn2(y, h2)
            y = y + h2
            y = torch.relu(self.fc1(y))
            y = torch.relu(self.fc2(y))
            cdf = torch.cumsum(torch.softmax(self.fc3(y), dim=-1), dim=-1)
            index = (cdf < u[:, :1]).sum(dim=-1)
            return (2.0 * index.float() / (classes - 1) - 1.0).unsqueeze(-1), h1, h2

    torch.manual_seed(seed)
    args = (torch.zeros(1, 1), torch.zeros(1, feat), torch.zeros(1, rnn), torch.zeros(1, rnn), torch.rand(1, 2))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Step().eval(), args, buffer, dynamo=False, opset_version=OPSET,
                          input_names=["x", "m", "h1", "h2", "u"], output_names=["x_next", "h1_next", "h2_next"])
    return onnx.load_from_string(buffer.getvalue())


def torch_step_loop_model(feat: int = 8, rnn: int = 32, fc: int = 24, classes: int = 64,
                          raw_feat: int = 6, seed: int = 0) -> onnx.ModelProto:
    """Inputs ``features`` [steps, 1, raw_feat], ``noise`` [steps, 1, 2]; outputs ``wave`` [steps, 1, 1]."""
    step = _torch_step(feat, rnn, fc, classes, seed)
    rng = np.random.default_rng(seed)
    body_nodes = [
        helper.make_node("Gather", ["cond", "t"], ["m"], axis=0),
        helper.make_node("Gather", ["noise", "t"], ["u"], axis=0),
        *step.graph.node,
        helper.make_node("Identity", ["x_next"], ["sample"]),
        helper.make_node("Identity", ["cond_in"], ["cond_out"]),
    ]
    body = helper.make_graph(
        body_nodes, "step",
        [helper.make_tensor_value_info("t", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1]),
         helper.make_tensor_value_info("h1", TensorProto.FLOAT, [1, rnn]),
         helper.make_tensor_value_info("h2", TensorProto.FLOAT, [1, rnn])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_next", TensorProto.FLOAT, [1, 1]),
         helper.make_tensor_value_info("h1_next", TensorProto.FLOAT, [1, rnn]),
         helper.make_tensor_value_info("h2_next", TensorProto.FLOAT, [1, rnn]),
         helper.make_tensor_value_info("sample", TensorProto.FLOAT, [1, 1])])
    weights = [numpy_helper.from_array((rng.standard_normal((raw_feat, feat)) * 0.5).astype(np.float32), "Wc"),
               numpy_helper.from_array(np.array([rnn], np.int64), "rnn_dims"),
               numpy_helper.from_array(np.array([1], np.int64), "one"),
               numpy_helper.from_array(np.array(0.5, np.float32), "half"),
               *step.graph.initializer]
    zero = numpy_helper.from_array(np.zeros(1, np.float32))
    main_nodes = [
        helper.make_node("MatMul", ["features", "Wc"], ["projected"]),
        helper.make_node("Tanh", ["projected"], ["cond"]),
        helper.make_node("Shape", ["features"], ["steps_1d"], start=0, end=1),
        helper.make_node("Squeeze", ["steps_1d"], ["steps"]),
        helper.make_node("Shape", ["features"], ["batch"], start=1, end=2),
        helper.make_node("Concat", ["batch", "rnn_dims"], ["h_shape"], axis=0),
        helper.make_node("Concat", ["batch", "one"], ["x_shape"], axis=0),
        helper.make_node("ConstantOfShape", ["h_shape"], ["h0"], value=zero),
        helper.make_node("ConstantOfShape", ["x_shape"], ["x0"], value=zero),
        helper.make_node("Loop", ["steps", "", "x0", "h0", "h0"], ["x_last", "h1_last", "h2_last", "samples"],
                         body=body),
        helper.make_node("Mul", ["samples", "half"], ["wave"]),
    ]
    graph = helper.make_graph(
        main_nodes, "foreign_wavernn",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["steps", 1, raw_feat]),
         helper.make_tensor_value_info("noise", TensorProto.FLOAT, ["steps", 1, 2])],
        [helper.make_tensor_value_info("wave", TensorProto.FLOAT, ["steps", 1, 1])],
        weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    model.producer_name = "waveopt-tests"
    _make_opaque(model)
    onnx.checker.check_model(model, full_check=True)
    return model


def _make_opaque(model: onnx.ModelProto) -> None:
    """Rename nodes n0.., inner values v0.., weights w0..; graph inputs and outputs keep their names."""
    keep = {v.name for v in model.graph.input} | {v.name for v in model.graph.output}
    renamed: dict[str, str] = {}
    for i, tensor in enumerate(model.graph.initializer):
        renamed[tensor.name] = f"w{i}"
        tensor.name = f"w{i}"
    counters = {"n": 0, "v": 0}

    def new(kind: str) -> str:
        counters[kind] += 1
        return f"{kind}{counters[kind]}"

    def visit(graph: onnx.GraphProto) -> None:
        for value in list(graph.input) + list(graph.output):
            if value.name not in keep and value.name not in renamed:
                renamed[value.name] = new("v")
        for node in graph.node:
            node.name = new("n")
            for out in node.output:
                if out and out not in keep and out not in renamed:
                    renamed[out] = new("v")
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g)
            node.input[:] = [renamed.get(v, v) for v in node.input]
            node.output[:] = [renamed.get(v, v) for v in node.output]
        for value in list(graph.input) + list(graph.output):
            value.name = renamed.get(value.name, value.name)
        for info in graph.value_info:
            info.name = renamed.get(info.name, info.name)

    visit(model.graph)
