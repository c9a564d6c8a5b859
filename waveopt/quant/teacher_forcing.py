"""The teacher-forced twin of a free-running WaveRNN model: same weights, logits out.

Quantization is judged on the logits each step computes from the same history, which a
free-running model never shows (it samples and feeds its own output back). The twin reads
the previous samples instead::

    before: mels, noise ─ ... ─ Loop or WaveRNNLoop (feeds back its samples) ─> samples, wave
    after:  mels, noise, prev_samples [T, B] ─ ... ─ the same loop, reading prev_samples[t]
            where it read its own previous sample ─> logits [T, B, N]

Works on our exports and on what the portable and native presets (and quantize) make of
them: a ``waveopt.ops::WaveRNNLoop`` just switches to its teacher-forced mode; an ONNX Loop is
recognised by structure (``match_wavernn_loop``: the fed-back sample and the logits), and
its body reads ``Gather(prev_samples, t)`` instead of the carried sample and also returns the
logits per step. Everything the logits do not need (post-processing) is pruned.
"""

from __future__ import annotations

import onnx
import onnx_ir as ir
from onnx import TensorProto, helper

from waveopt.errors import WaveoptError
from waveopt.graph import prune_graph
from waveopt.native_library import DOMAIN
from waveopt.passes import NotRecognised, match_wavernn_loop

__all__ = ["PREV_SAMPLES", "teacher_forced_variant"]

PREV_SAMPLES = "prev_samples"
LOGITS = "logits"


def teacher_forced_variant(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of free-running ``model`` with inputs (..., prev_samples [T, B]) and output logits."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    if any(i.name == PREV_SAMPLES for i in graph.input):
        raise WaveoptError("the model is already teacher-forced (it reads prev_samples)")
    native = [n for n in graph.node if n.domain == DOMAIN and n.op_type == "WaveRNNLoop"]
    if len(native) > 1:
        raise WaveoptError(f"the model has {len(native)} WaveRNNLoop nodes; expected one")
    if native:
        logits = _native(native[0])
    else:
        logits = _portable(out)
    graph.input.append(helper.make_tensor_value_info(PREV_SAMPLES, TensorProto.FLOAT, ["steps", "batch"]))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(logits, TensorProto.FLOAT, None))
    _drop_value_info(graph, logits)
    prune_graph(graph)
    for prop in out.metadata_props:
        if prop.key == "waveopt.form":
            prop.value = "teacher_forced"
    return out


def _native(node: onnx.NodeProto) -> str:
    if _int_attr(node, "teacher_forced") == 1:
        raise WaveoptError("the model's WaveRNNLoop is already teacher-forced")
    del node.input[16:]
    node.input.append(PREV_SAMPLES)
    _set_int_attr(node, "teacher_forced", 1)
    node.output[0] = LOGITS  # what read the samples is pruned
    return LOGITS


def _portable(model: onnx.ModelProto) -> str:
    ir_model = ir.serde.deserialize_model(model)
    reasons = []
    for index, loop in enumerate(ir_model.graph):
        if loop.op_type != "Loop" or loop.domain not in ("", "ai.onnx"):
            continue
        try:
            rec = match_wavernn_loop(loop, check_sampler=False)
        except NotRecognised as e:
            reasons.append(str(e))
            continue
        if rec.teacher_forced:
            raise WaveoptError("the model's Loop is already teacher-forced")
        return _rewire_loop(model.graph.node[index], rec.sample_input, rec.logits_value)
    why = f": {reasons[0]}" if reasons else " (no Loop node)"
    raise WaveoptError(f"no WaveRNN loop recognised in the model, so it has no teacher-forced form{why}")


def _rewire_loop(loop: onnx.NodeProto, sample_input: ir.Value, logits: ir.Value) -> str:
    body = next(a.g for a in loop.attribute if a.name == "body")
    iteration = body.input[0].name
    rank = len(sample_input.shape) if sample_input.shape is not None else None
    if rank not in (1, 2):
        raise WaveoptError(f"the loop's fed-back sample has rank {rank}; only [B] and [B, 1] are supported")
    prev_t = "teacher_forcing/prev_t"
    nodes = [helper.make_node("Gather", [PREV_SAMPLES, iteration], [prev_t], axis=0, name="teacher_forcing/gather")]
    if rank == 2:
        axes = "teacher_forcing/axes"
        nodes.append(helper.make_node("Constant", [], [axes], name="teacher_forcing/axes",
                                      value=helper.make_tensor(axes, TensorProto.INT64, [1], [1])))
        nodes.append(helper.make_node("Unsqueeze", [prev_t, axes], ["teacher_forcing/prev"],
                                      name="teacher_forcing/unsqueeze"))
    teacher_value = nodes[-1].output[0]
    for node in body.node:
        for i, name in enumerate(node.input):
            if name == sample_input.name:
                node.input[i] = teacher_value
    _replace(body.node, nodes + list(body.node))
    body.output.append(helper.make_tensor_value_info(logits.name, TensorProto.FLOAT, None))
    loop.output.append(LOGITS)
    return LOGITS


def _replace(field, items) -> None:
    """Set a repeated protobuf field to ``items``."""
    items = list(items)
    del field[:]
    field.extend(items)


def _drop_value_info(graph: onnx.GraphProto, name: str) -> None:
    _replace(graph.value_info, [v for v in graph.value_info if v.name != name])


def _int_attr(node: onnx.NodeProto, name: str) -> int | None:
    for a in node.attribute:
        if a.name == name:
            return a.i
    return None


def _set_int_attr(node: onnx.NodeProto, name: str, value: int) -> None:
    for a in node.attribute:
        if a.name == name:
            a.i = value
            return
    node.attribute.append(helper.make_attribute(name, value))
