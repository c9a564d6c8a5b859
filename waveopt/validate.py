"""Is this a model waveopt can work on? Checked once, before any work, by every command that reads one.

    model = load_valid_model(path)        # or validate_model(proto)
    # InvalidModel("invalid model: <what>") -> the CLI prints one line and exits 2

In order, the first problem found is reported:

1. an ONNX opset that exists; ``onnx.checker`` -- with ``full_check`` (strict shape inference) for our own exports,
   the models that carry waveopt metadata; a foreign model gets the structural check only;
2. waveopt's metadata against its schema (:func:`waveopt.model_info.wavernn_info`);
3. every ONNX ``Loop``: a ``body``, as many body inputs as the node has inputs, one body
   output per carried value and scan output, a constant trip count that is a non-negative
   int64 scalar and a constant condition that is a bool scalar;
4. for our exports, the interface the commands feed and read: ``mels`` [batch, feat, frames]
   and ``noise`` [steps, sequences, 2] (or ``prev_samples`` [steps, sequences]) as float
   graph inputs and no other input without a value, the outputs ``wave`` and ``samples``
   (or ``logits``), and the inputs and outputs the metadata names.

``allow_invalid`` (the CLI's ``--allow-invalid``) skips the refusal for users who know
better; :func:`processing_invalid` then turns a failure caused by the invalid model into
one line naming the problem found, instead of an internal error.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import onnx
from google.protobuf.descriptor import FieldDescriptor
from onnx import numpy_helper

from waveopt.errors import InvalidModel, WaveoptError, one_line
from waveopt.graph import iter_proto_graphs, load_model
from waveopt.model_info import wavernn_info

__all__ = ["load_valid_model", "validate_model", "model_problem", "processing_invalid", "check_noise"]

_MAX_MESSAGE = 240


def load_valid_model(path: str | os.PathLike[str], allow_invalid: bool = False) -> onnx.ModelProto:
    """:func:`waveopt.graph.load_model`, then :func:`validate_model` unless ``allow_invalid``."""
    model = load_model(path)
    if not allow_invalid:
        validate_model(model)
    return model


def validate_model(model: onnx.ModelProto) -> None:
    """Raise :class:`InvalidModel` naming the first problem of ``model`` (see the module docstring)."""
    problem = model_problem(model)
    if problem:
        raise InvalidModel(problem)


def model_problem(model: onnx.ModelProto) -> str:
    """The first problem of ``model``, as a short phrase, or "" for a model waveopt can work on."""
    try:
        info = wavernn_info(model)
    except InvalidModel as e:
        info, metadata_problem = None, e.problem
    else:
        metadata_problem = ""
    ours = any(p.key == "waveopt.kind" for p in model.metadata_props)
    field = _field_not_utf8(model)
    if field:
        return f"the text of {field} is not valid UTF-8"
    newest = onnx.defs.onnx_opset_version()
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and not 1 <= opset.version <= newest:
            return f"it imports ONNX opset {opset.version}; this onnx knows opsets 1 to {newest}"
    try:
        onnx.checker.check_model(model, full_check=ours)
    except Exception as e:  # ValidationError, InferenceError, ...
        return f"onnx.checker: {_one_line(e)}"
    if metadata_problem:
        return metadata_problem
    for graph in iter_proto_graphs(model.graph):
        for node in graph.node:
            if node.op_type == "Loop" and node.domain in ("", "ai.onnx"):
                problem = _loop_problem(node, graph)
                if problem:
                    return f"Loop {node.name or node.output[0]!r}: {problem}"
    return _interface_problem(model, info) if info is not None else ""


@contextlib.contextmanager
def processing_invalid(model: onnx.ModelProto, allowed: bool):
    """With ``allowed`` (``--allow-invalid``) and an invalid ``model``, a failure in the block
    becomes a WaveoptError that names the model's problem; otherwise nothing changes."""
    try:
        yield
    except WaveoptError:
        raise
    except Exception as e:
        problem = model_problem(model) if allowed else ""
        if not problem:
            raise
        root = e
        while root.__cause__ is not None:
            root = root.__cause__
        raise WaveoptError(f"processing the invalid model failed ({type(root).__name__}: {_one_line(root)}); "
                           f"it is invalid because {problem}") from e


def check_noise(noise, where: str) -> None:
    """Refuse sampling noise that is not uniforms strictly inside (0, 1): the samplers take
    log(u) and log(1 - u), and the inverse CDF assumes u < 1 (NaN would sample garbage)."""
    array = np.asarray(noise)
    if not np.issubdtype(array.dtype, np.floating):
        raise WaveoptError(f"{where}: noise must be floats in (0, 1), got dtype {array.dtype}")
    outside = ~((array > 0) & (array < 1))
    if outside.any():
        first = array.reshape(-1)[np.flatnonzero(outside.reshape(-1))[0]]
        raise WaveoptError(f"{where}: noise must lie strictly inside (0, 1); {int(outside.sum())} value(s) do not "
                           f"(e.g. {first})")


# --- Loop -------------------------------------------------------------------------------------
def _loop_problem(node: onnx.NodeProto, graph: onnx.GraphProto) -> str:
    bodies = [a.g for a in node.attribute if a.name == "body" and a.type == onnx.AttributeProto.GRAPH]
    if not bodies:
        return "no body graph"
    body = bodies[0]
    carried = len(node.input) - 2
    if carried < 0:
        return f"{len(node.input)} inputs; a Loop takes the trip count, the condition and its carried values"
    if len(body.input) != carried + 2:
        return (f"the body takes {len(body.input)} inputs, the node gives {carried + 2} "
                "(iteration number, condition and each carried value)")
    scans = len(body.output) - 1 - carried
    if scans < 0:
        return f"the body returns {len(body.output)} outputs, fewer than condition + {carried} carried values"
    if len(node.output) != carried + scans:
        return f"the node has {len(node.output)} outputs, its body returns {carried} carried and {scans} scanned"
    trip = _constant(graph, node.input[0])
    if trip is not None and (trip.dtype != np.int64 or trip.shape != () or int(trip) < 0):
        return f"the trip count is {_show_array(trip)}; it must be a non-negative int64 scalar"
    cond = _constant(graph, node.input[1])
    if cond is not None and (cond.dtype != np.bool_ or cond.shape != ()):
        return f"the condition is {_show_array(cond)}; it must be a bool scalar"
    return ""


def _constant(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    """The value of ``name`` if an initializer or a Constant node of ``graph`` holds it."""
    if not name:
        return None
    for tensor in graph.initializer:
        if tensor.name == name:
            return numpy_helper.to_array(tensor)
    for node in graph.node:
        if node.op_type == "Constant" and list(node.output) == [name]:
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            return numpy_helper.to_array(value) if value is not None else None
    return None


# --- the interface our commands feed and read -------------------------------------------------
def _interface_problem(model: onnx.ModelProto, info) -> str:
    initialized = {t.name for t in model.graph.initializer}
    inputs = {v.name: v for v in model.graph.input if v.name not in initialized}
    outputs = {v.name for v in model.graph.output}
    driver = "prev_samples" if info.teacher_forced else "noise"
    expected_inputs = {"mels": (3, {1: info.feat_dims}), driver: (2, {}) if info.teacher_forced else (3, {2: 2})}
    for name, (rank, fixed) in expected_inputs.items():
        if name not in inputs:
            return f"no graph input {name!r} (a waveopt {info.form.replace('_', '-')} export takes " \
                   f"{' and '.join(expected_inputs)})"
        problem = _input_type_problem(inputs[name], rank, fixed)
        if problem:
            return f"graph input {name!r} {problem}"
    extra = sorted(set(inputs) - set(expected_inputs))
    if extra:
        return f"graph input {extra[0]!r} has no value and waveopt feeds only {' and '.join(expected_inputs)}"
    needed = ["logits"] if info.teacher_forced else ["wave", "samples"]
    meta = {p.key: p.value for p in model.metadata_props}
    named = [n.strip() for n in meta.get("waveopt.sampled_outputs", "").split(",") if n.strip()]
    for name in [*needed, *named]:
        if name not in outputs:
            return f"no graph output {name!r}"
    noise = meta.get("waveopt.noise_input")
    if noise is not None and noise not in inputs:
        return f"metadata waveopt.noise_input names {noise!r}, which is not a graph input"
    return ""


def _input_type_problem(value: onnx.ValueInfoProto, rank: int, fixed: dict[int, int]) -> str:
    if not value.type.HasField("tensor_type"):
        return "is not a tensor"
    tensor = value.type.tensor_type
    if tensor.elem_type != onnx.TensorProto.FLOAT:
        return f"has type {onnx.TensorProto.DataType.Name(tensor.elem_type)}, expected FLOAT"
    if not tensor.HasField("shape"):
        return ""
    dims = tensor.shape.dim
    if len(dims) != rank:
        return f"has rank {len(dims)}, expected {rank}"
    for axis, size in fixed.items():
        if dims[axis].HasField("dim_value") and dims[axis].dim_value != size:
            return f"has {dims[axis].dim_value} in dimension {axis}, expected {size}"
    return ""


# --- helpers ----------------------------------------------------------------------------------
def _field_not_utf8(message, path: str = "model") -> str:
    """The first string field that protobuf could not decode as UTF-8 (it hands out bytes)."""
    for field, value in message.ListFields():
        repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED
        values = value if repeated else [value]
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            for item in values:
                found = _field_not_utf8(item, f"{path}.{field.name}")
                if found:
                    return found
        elif field.type == FieldDescriptor.TYPE_STRING and any(isinstance(v, bytes) for v in values):
            return f"{path}.{field.name}"
    return ""


def _show_array(value: np.ndarray) -> str:
    shown = value.tolist() if value.size <= 4 else f"{value.size} values"
    return f"{shown} ({value.dtype}, shape {list(value.shape)})"


def _one_line(e: BaseException) -> str:
    return one_line(e, _MAX_MESSAGE)
