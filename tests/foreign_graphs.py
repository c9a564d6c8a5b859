"""WaveRNN sample loops made another way than our exporter, for testing passes on them.

:func:`torchscript_loop_model`: one WaveRNN step (Linear, GRUCell, Linear x3 and the
inverse-CDF sampler, in plain PyTorch) exported by the TorchScript exporter
(``torch.onnx.export(..., dynamo=False)``), wrapped in a Loop assembled here with
onnx.helper, unlike our exporter:

- the conditioning arrives batch-major as one tensor ``features [B, T, feat + 4·aux]``,
  gathered with ``Gather(features, t, axis=1)`` and cut with a ``Split`` in the body;
- the model inputs come in another order (``noise`` / ``prev_samples`` first), the loop
  carries ``(h2, x, h1)`` and the step's inputs are ``(h2, aux, x, h1, m)``;
- the step keeps the TorchScript exporter's own names, Constant nodes and lack of
  shape annotations; its weights become main-graph initializers read from the outer scope.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

__all__ = ["TorchStep", "torchscript_loop_model", "torchscript_loop_inputs"]

OPSET = 17


class TorchStep(nn.Module):
    """One fatchord-style WaveRNN step, written plainly (not with waveopt's WaveRNN class)."""

    def __init__(self, feat: int, aux: int, rnn: int, fc: int, classes: int, teacher_forced: bool):
        super().__init__()
        self.aux, self.classes, self.teacher_forced = aux, classes, teacher_forced
        self.I = nn.Linear(1 + feat + aux, rnn)
        self.rnn1 = nn.GRUCell(rnn, rnn)
        self.rnn2 = nn.GRUCell(rnn + aux, rnn)
        self.fc1 = nn.Linear(rnn + aux, fc)
        self.fc2 = nn.Linear(fc + aux, fc)
        self.fc3 = nn.Linear(fc, classes)

    def forward(self, h2, aux_t, x, h1, m_t, u=None):
        a1, a2, a3, a4 = torch.split(aux_t, self.aux, dim=1)
        y = self.I(torch.cat([x, m_t, a1], dim=1))
        h1 = self.rnn1(y, h1)
        y = y + h1
        h2 = self.rnn2(torch.cat([y, a2], dim=1), h2)
        y = y + h2
        y = torch.relu(self.fc1(torch.cat([y, a3], dim=1)))
        y = torch.relu(self.fc2(torch.cat([y, a4], dim=1)))
        logits = self.fc3(y)
        if self.teacher_forced:
            return logits, h1, h2
        cdf = torch.cumsum(torch.softmax(logits, dim=1), dim=1)
        index = (cdf < u[:, :1]).sum(dim=1).clamp(max=self.classes - 1)
        sample = 2.0 * index.float() / (self.classes - 1.0) - 1.0
        return sample.unsqueeze(1), h1, h2, sample


def _export_step(step: TorchStep, feat: int, aux: int, rnn: int) -> onnx.ModelProto:
    b = 2
    args = [torch.rand(b, rnn), torch.rand(b, 4 * aux), torch.rand(b, 1), torch.rand(b, rnn), torch.rand(b, feat)]
    names = ["h2", "aux_t", "x", "h1", "m_t"]
    outputs = ["logits", "h1_next", "h2_next"]
    if not step.teacher_forced:
        args.append(torch.rand(b, 2))
        names.append("u")
        outputs = ["x_next", "h1_next", "h2_next", "sample"]
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(step.eval(), tuple(args), f, dynamo=False, opset_version=OPSET,
                          input_names=names, output_names=outputs,
                          dynamic_axes={n: {0: "batch"} for n in names + outputs})
    return onnx.load_from_string(f.getvalue())


def torchscript_loop_model(feat: int = 12, aux: int = 5, rnn: int = 40, fc: int = 24, classes: int = 64,
                           teacher_forced: bool = False, seed: int = 0) -> onnx.ModelProto:
    """The whole sample loop (see the module docstring).

    Free-running: inputs ``noise [T, B, 2]``, ``features [B, T, feat + 4·aux]``; outputs
    ``samples [T, B]`` and ``h1_last [B, rnn]``. Teacher-forced: inputs
    ``prev_samples [B, T]``, ``features``; output ``logits [T, B, classes]``.
    """
    torch.manual_seed(seed)
    step = TorchStep(feat, aux, rnn, fc, classes, teacher_forced)
    with torch.no_grad():  # spread the GRU gates like a trained model's (not all near 0.5)
        for p in step.parameters():
            p.mul_(2.0)
    cell = _export_step(step, feat, aux, rnn)

    rename = {}
    for node in cell.graph.node:
        for i, name in enumerate(node.output):
            rename[name] = f"cell{name}" if name.startswith("/") else f"cell/{name}"
            node.output[i] = rename[name]
    carried_in = {"h2": "h2_in", "h1": "h1_in"} if teacher_forced else {"h2": "h2_in", "x": "x_in", "h1": "h1_in"}
    step_inputs = {"m_t": "m_t", "aux_t": "aux_t", **carried_in, "u": "u_t"}
    if teacher_forced:
        step_inputs["x"] = "x_t"
    for node in cell.graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = step_inputs.get(name, rename.get(name, name))

    body_nodes = [
        helper.make_node("Gather", ["features", "t"], ["features_t"], axis=1),
        helper.make_node("Constant", [], ["split_sizes"],
                         value=numpy_helper.from_array(np.array([feat, 4 * aux], np.int64))),
        helper.make_node("Split", ["features_t", "split_sizes"], ["m_t", "aux_t"], axis=1),
    ]
    if teacher_forced:
        body_nodes += [
            helper.make_node("Gather", ["prev_samples", "t"], ["prev_t"], axis=1),
            helper.make_node("Constant", [], ["axis1"], value=numpy_helper.from_array(np.array([1], np.int64))),
            helper.make_node("Unsqueeze", ["prev_t", "axis1"], ["x_t"]),
        ]
    else:
        body_nodes.append(helper.make_node("Gather", ["noise", "t"], ["u_t"], axis=0))
    body_nodes += list(cell.graph.node)
    body_nodes.append(helper.make_node("Identity", ["cond"], ["cond_out"]))

    f32 = TensorProto.FLOAT
    state = [("h2", rnn), ("h1", rnn)] if teacher_forced else [("h2", rnn), ("x", 1), ("h1", rnn)]
    body_in = [helper.make_tensor_value_info("t", TensorProto.INT64, []),
               helper.make_tensor_value_info("cond", TensorProto.BOOL, [])]
    body_in += [helper.make_tensor_value_info(f"{n}_in", f32, ["batch", w]) for n, w in state]
    out_names = {"h2": "cell/h2_next", "h1": "cell/h1_next", "x": "cell/x_next"}
    body_out = [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, [])]
    body_out += [helper.make_tensor_value_info(out_names[n], f32, ["batch", w]) for n, w in state]
    if teacher_forced:
        body_out.append(helper.make_tensor_value_info("cell/logits", f32, ["batch", classes]))
    else:
        body_out.append(helper.make_tensor_value_info("cell/sample", f32, ["batch"]))
    body = helper.make_graph(body_nodes, "torchscript_step", body_in, body_out)

    driver = ("prev_samples", ["batch", "steps"]) if teacher_forced else ("noise", ["steps", "batch", 2])
    nodes = [
        helper.make_node("Shape", ["features"], ["features_shape"]),
        helper.make_node("Constant", [], ["one"], value=numpy_helper.from_array(np.array(1, np.int64))),
        helper.make_node("Gather", ["features_shape", "one"], ["steps"], axis=0),
        helper.make_node("Slice", ["features_shape", "zero_1d", "one_1d"], ["batch_1d"]),
    ]
    inits = [numpy_helper.from_array(np.array([0], np.int64), "zero_1d"),
             numpy_helper.from_array(np.array([1], np.int64), "one_1d")]
    initial = []
    for n, w in state:
        inits.append(numpy_helper.from_array(np.array([w], np.int64), f"{n}_width"))
        nodes += [helper.make_node("Concat", ["batch_1d", f"{n}_width"], [f"{n}_shape"], axis=0),
                  helper.make_node("ConstantOfShape", [f"{n}_shape"], [f"{n}_0"],
                                   value=numpy_helper.from_array(np.zeros(1, np.float32)))]
        initial.append(f"{n}_0")
    last = [f"{n}_last" for n, _ in state]
    scan = "logits" if teacher_forced else "samples"
    nodes.append(helper.make_node("Loop", ["steps", "", *initial], [*last, scan], body=body))
    inits += list(cell.graph.initializer)
    inputs = [helper.make_tensor_value_info(driver[0], f32, driver[1]),
              helper.make_tensor_value_info("features", f32, ["batch", "steps", feat + 4 * aux])]
    if teacher_forced:
        outputs = [helper.make_tensor_value_info("logits", f32, ["steps", "batch", classes])]
    else:
        outputs = [helper.make_tensor_value_info("samples", f32, ["steps", "batch"]),
                   helper.make_tensor_value_info("h1_last", f32, ["batch", rnn])]
    graph = helper.make_graph(nodes, "torchscript_wavernn", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    model.producer_name = "waveopt-tests (torchscript step)"
    if not teacher_forced:
        helper.set_model_props(model, {"waveopt.sampled_outputs": "samples", "waveopt.noise_input": "noise"})
    onnx.checker.check_model(model, full_check=True)
    return model


def torchscript_loop_inputs(model: onnx.ModelProto, steps: int, batch: int = 2, seed: int = 0) -> dict:
    """Seeded inputs: features ~ N(0, 1), noise ~ U(1e-5, 1 - 1e-5), previous samples in [-1, 1]."""
    rng = np.random.default_rng(seed)
    width = next(i for i in model.graph.input if i.name == "features").type.tensor_type.shape.dim[2].dim_value
    inputs = {"features": rng.standard_normal((batch, steps, width)).astype(np.float32)}
    if any(i.name == "noise" for i in model.graph.input):
        inputs["noise"] = rng.uniform(1e-5, 1 - 1e-5, (steps, batch, 2)).astype(np.float32)
    else:
        inputs["prev_samples"] = rng.uniform(-1, 1, (batch, steps)).astype(np.float32)
    return inputs
