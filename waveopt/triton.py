"""A ``config.pbtxt`` for serving a model with NVIDIA Triton's onnxruntime backend.

The backend registers the libraries named in ``model_operations { op_library_filename }``
with each session (``RegisterCustomOpsLibrary``), so a model using waveopt's native ops
needs the path the server sees ``libwaveopt_ops.so`` at::

    model.onnx [mels float [batch, 80, frames], noise float [steps, sequences, 2]] ->
        name: "wavernn"  backend: "onnxruntime"  max_batch_size: 0
        input [ { name: "mels" data_type: TYPE_FP32 dims: [ -1, 80, -1 ] }, ... ]
        model_operations { op_library_filename: "/opt/waveopt/libwaveopt_ops.so" }

``max_batch_size: 0``: the inputs have no common batch dimension (noise is [steps,
sequences, 2]), so every dim is listed, symbolic ones as -1.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from .errors import WaveoptError
from .runtime import uses_native_ops

__all__ = ["triton_config", "TRITON_TYPES"]

# ONNX tensor element types -> Triton's DataType names.
TRITON_TYPES = {
    onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.DOUBLE: "TYPE_FP64", onnx.TensorProto.BFLOAT16: "TYPE_BF16",
    onnx.TensorProto.INT8: "TYPE_INT8", onnx.TensorProto.INT16: "TYPE_INT16",
    onnx.TensorProto.INT32: "TYPE_INT32", onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.UINT8: "TYPE_UINT8", onnx.TensorProto.UINT16: "TYPE_UINT16",
    onnx.TensorProto.UINT32: "TYPE_UINT32", onnx.TensorProto.UINT64: "TYPE_UINT64",
    onnx.TensorProto.BOOL: "TYPE_BOOL", onnx.TensorProto.STRING: "TYPE_STRING",
}


def triton_config(model: onnx.ModelProto, name: str, model_filename: str, library: str | Path | None,
                  threads: int = 1, instances: int = 1) -> str:
    """The config.pbtxt text; ``library`` is the op library's path on the server (needed iff the
    model uses waveopt.ops)."""
    if threads < 1 or instances < 1:
        raise WaveoptError("--threads and --instances must be at least 1")
    if not name or any(c in name for c in '"\\/\n'):
        raise WaveoptError(f"--name {name!r}: a Triton model name is one directory name, without quotes")
    native = uses_native_ops(model)
    initializers = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    lines = [f"# Triton model repository: <repo>/{name}/config.pbtxt (this file), <repo>/{name}/1/{model_filename}",
             f'name: "{name}"',
             'backend: "onnxruntime"',
             "max_batch_size: 0",
             f'default_model_filename: "{model_filename}"',
             _tensors("input", inputs),
             _tensors("output", list(model.graph.output)),
             f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]",
             # The native ops run their own worker team: ORT's pool stays at one thread.
             f'parameters {{ key: "intra_op_thread_count" value: {{ string_value: "{1 if native else threads}" }} }}',
             'parameters { key: "inter_op_thread_count" value: { string_value: "1" } }']
    if native:
        lines.insert(1, f"# the native ops' worker team: start tritonserver with WAVEOPT_THREADS={threads}")
        if library is None:
            raise WaveoptError("the model uses waveopt's native ops: give the op library's path on the server")
        lines.append(f'model_operations {{ op_library_filename: "{library}" }}')
    return "\n".join(lines) + "\n"


def _tensors(kind: str, values: list[onnx.ValueInfoProto]) -> str:
    entries = []
    for value in values:
        if not value.type.HasField("tensor_type"):
            raise WaveoptError(f"{kind} {value.name!r} is not a tensor; Triton's onnxruntime backend needs tensors")
        tensor = value.type.tensor_type
        if tensor.elem_type not in TRITON_TYPES:
            raise WaveoptError(f"{kind} {value.name!r} has ONNX element type {tensor.elem_type}, which Triton "
                               "has no type for")
        dims = ", ".join(str(d.dim_value) if d.HasField("dim_value") else "-1" for d in tensor.shape.dim)
        entries.append(f'  {{\n    name: "{value.name}"\n    data_type: {TRITON_TYPES[tensor.elem_type]}\n'
                       f"    dims: [ {dims} ]\n  }}")
    return f"{kind} [\n" + ",\n".join(entries) + "\n]"
