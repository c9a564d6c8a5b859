"""Mutations of ONNX models, as an attacker or a careless user would make them (tests/test_fuzz.py).

Each mutator takes a ``ModelProto`` (a private copy it may change) and a seeded
``random.Random`` and returns the bytes of the mutated file, or None when it does not
apply to that model. Byte-level mutators damage the serialized file; the others change
one thing with the onnx API: nodes, initializers, the Loop's interface, attributes,
graph inputs, opsets, value_info, waveopt's metadata.

    mutant = mutate(model, random.Random(7))   # (mutator name, bytes)
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["MUTATORS", "mutate"]

Mutator = Callable[[onnx.ModelProto, random.Random], "bytes | None"]


def _graphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    """The graph and every subgraph below it."""
    found = [graph]
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                found += _graphs(sub)
    return found


def _some_graph(model, rng) -> onnx.GraphProto:
    """The main graph or a Loop body, the body more often (it is where the passes look)."""
    graphs = _graphs(model.graph)
    return graphs[-1] if len(graphs) > 1 and rng.random() < 0.6 else rng.choice(graphs)


def _some_node(model, rng, graph=None):
    graph = graph or _some_graph(model, rng)
    return (graph, rng.randrange(len(graph.node))) if graph.node else (graph, None)


def _loop(model) -> onnx.NodeProto | None:
    return next((n for n in model.graph.node if n.op_type == "Loop"), None)


def _serialize(model) -> bytes:
    return model.SerializeToString()


# --- bytes ----------------------------------------------------------------------------------
def flip_bytes(model, rng):
    data = bytearray(_serialize(model))
    for _ in range(rng.choice([1, 2, 8, 64])):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data)


def truncate(model, rng):
    data = _serialize(model)
    return data[: rng.randrange(len(data))]


# --- nodes ----------------------------------------------------------------------------------
def delete_node(model, rng):
    graph, i = _some_node(model, rng)
    if i is None:
        return None
    del graph.node[i]
    return _serialize(model)


def duplicate_node(model, rng):
    graph, i = _some_node(model, rng)
    if i is None:
        return None
    copy = onnx.NodeProto()
    copy.CopyFrom(graph.node[i])
    graph.node.insert(rng.randrange(len(graph.node) + 1), copy)
    return _serialize(model)


def swap_inputs(model, rng):
    graph = _some_graph(model, rng)
    nodes = [n for n in graph.node if len([x for x in n.input if x]) >= 2]
    if not nodes:
        return None
    node = rng.choice(nodes)
    i, j = rng.sample(range(len(node.input)), 2)
    node.input[i], node.input[j] = node.input[j], node.input[i]
    return _serialize(model)


def rewire_input(model, rng):
    """A node input now reads another value of the same graph (or a name nobody produces)."""
    graph, i = _some_node(model, rng)
    if i is None or not graph.node[i].input:
        return None
    node = graph.node[i]
    names = [o for n in graph.node for o in n.output] + [v.name for v in graph.input]
    k = rng.randrange(len(node.input))
    node.input[k] = rng.choice(names) if names and rng.random() < 0.7 else "no_such_value"
    return _serialize(model)


def change_op_type(model, rng):
    graph, i = _some_node(model, rng)
    if i is None:
        return None
    graph.node[i].op_type = rng.choice(["Relu", "Add", "Identity", "NoSuchOp", "Loop", "Gemm"])
    return _serialize(model)


def change_attribute(model, rng):
    graph = _some_graph(model, rng)
    nodes = [n for n in graph.node if any(a.type != onnx.AttributeProto.GRAPH for a in n.attribute)]
    if not nodes:
        return None
    node = rng.choice(nodes)
    attr = rng.choice([a for a in node.attribute if a.type != onnx.AttributeProto.GRAPH])
    if attr.type == onnx.AttributeProto.INT:
        attr.i = rng.choice([-7, -1, 0, 1, 2, 5, 1 << 40])
    elif attr.type == onnx.AttributeProto.FLOAT:
        attr.f = rng.choice([float("nan"), float("inf"), -1.0, 0.0, 1e30])
    elif attr.type == onnx.AttributeProto.STRING:
        attr.s = rng.choice([b"", b"mol", b"raw", b"int8", b"int4", b"gelu", b"\xff\xfe"])
    elif attr.type == onnx.AttributeProto.INTS:
        del attr.ints[:]
        attr.ints.extend(rng.choice([[], [0], [-1, 5], [1, 1, 1, 1, 1]]))
    elif attr.type == onnx.AttributeProto.FLOATS:
        del attr.floats[:]
        attr.floats.extend(rng.choice([[], [float("nan"), 1.0], [-1.0, 0.0]]))
    elif attr.type == onnx.AttributeProto.TENSOR:
        attr.t.CopyFrom(numpy_helper.from_array(np.array(rng.choice([[], [float("nan")], [1e9]]),
                                                         np.float32), attr.t.name))
    else:
        node.attribute.remove(attr)
    if rng.random() < 0.2:  # or one the op does not know
        node.attribute.append(helper.make_attribute("no_such_attribute", 3))
    return _serialize(model)


def empty_graph(model, rng):
    graph = _some_graph(model, rng)
    del graph.node[:]
    if rng.random() < 0.5:
        del graph.initializer[:]
    return _serialize(model)


# --- initializers ---------------------------------------------------------------------------
def _some_initializer(model, rng):
    graph = rng.choice([g for g in _graphs(model.graph) if g.initializer] or [model.graph])
    if not graph.initializer:
        return graph, None
    big = [i for i, t in enumerate(graph.initializer) if np.prod(t.dims) > 1]
    return graph, rng.choice(big if big and rng.random() < 0.8 else range(len(graph.initializer)))


def initializer_dims(model, rng):
    graph, i = _some_initializer(model, rng)
    if i is None:
        return None
    array = numpy_helper.to_array(graph.initializer[i])
    if array.ndim == 0 or rng.random() < 0.3:
        array = array.reshape(-1)[:, None] if array.size else array.reshape(1, 0)
    elif array.shape[-1] > 1 and rng.random() < 0.5:
        array = array[..., :-1]
    else:
        array = np.concatenate([array, array[..., :1]], axis=-1)
    graph.initializer[i].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array), graph.initializer[i].name))
    return _serialize(model)


def initializer_dtype(model, rng):
    graph, i = _some_initializer(model, rng)
    if i is None:
        return None
    array = numpy_helper.to_array(graph.initializer[i])
    dtype = rng.choice([np.float64, np.float16, np.int32, np.int64, np.uint8, np.bool_])
    graph.initializer[i].CopyFrom(numpy_helper.from_array(array.astype(dtype), graph.initializer[i].name))
    return _serialize(model)


def initializer_nonfinite(model, rng):
    graph = rng.choice([g for g in _graphs(model.graph) if g.initializer] or [model.graph])
    floats = [i for i, t in enumerate(graph.initializer) if t.data_type == onnx.TensorProto.FLOAT]
    if not floats:
        return None
    i = rng.choice(floats)
    array = numpy_helper.to_array(graph.initializer[i]).copy()
    if array.size == 0:
        return None
    flat = array.reshape(-1)
    value = rng.choice([np.nan, np.inf, -np.inf, 1e38])
    if rng.random() < 0.5:
        flat[rng.randrange(flat.size)] = value
    else:
        flat[:] = value
    graph.initializer[i].CopyFrom(numpy_helper.from_array(array, graph.initializer[i].name))
    return _serialize(model)


def remove_initializer(model, rng):
    graph, i = _some_initializer(model, rng)
    if i is None:
        return None
    del graph.initializer[i]
    return _serialize(model)


# --- the Loop's interface -------------------------------------------------------------------
def loop_trip_count(model, rng):
    """Loop M (input 0) replaced by a constant: 0, -1, or a huge or float one."""
    loop = _loop(model)
    if loop is None:
        return None
    value = rng.choice([np.array(0, np.int64), np.array(-1, np.int64), np.array(-5, np.int64),
                        np.array(1 << 40, np.int64), np.array([3, 4], np.int64), np.array(2.5, np.float32)])
    model.graph.initializer.append(numpy_helper.from_array(value, "fuzz_trip_count"))
    loop.input[0] = "fuzz_trip_count"
    return _serialize(model)


def loop_condition(model, rng):
    loop = _loop(model)
    if loop is None:
        return None
    value = rng.choice([np.array(False), np.array(True), np.array(0, np.int64), np.array([True, False])])
    model.graph.initializer.append(numpy_helper.from_array(value, "fuzz_cond"))
    loop.input[1] = "fuzz_cond"
    return _serialize(model)


def body_outputs(model, rng):
    loop = _loop(model)
    if loop is None:
        return None
    body = next(a.g for a in loop.attribute if a.name == "body")
    choice = rng.randrange(4)
    if choice == 0 and len(body.output) > 1:
        del body.output[rng.randrange(len(body.output))]
    elif choice == 1:
        extra = onnx.ValueInfoProto()
        extra.CopyFrom(rng.choice(body.output))
        body.output.append(extra)
    elif choice == 2 and len(body.output) > 2:
        i, j = rng.sample(range(len(body.output)), 2)
        a, b = onnx.ValueInfoProto(), onnx.ValueInfoProto()
        a.CopyFrom(body.output[i])
        b.CopyFrom(body.output[j])
        body.output[i].CopyFrom(b)
        body.output[j].CopyFrom(a)
    else:
        del body.input[rng.randrange(len(body.input))]
    return _serialize(model)


def loop_outputs(model, rng):
    loop = _loop(model)
    if loop is None:
        return None
    if rng.random() < 0.5:
        loop.output.append("fuzz_extra_out")
    else:
        del loop.input[-1]
    return _serialize(model)


# --- graph interface ------------------------------------------------------------------------
def rename_input(model, rng):
    """A graph input renamed everywhere (a valid model whose interface is not waveopt's)."""
    inputs = [v for v in model.graph.input if v.name not in {t.name for t in model.graph.initializer}]
    if not inputs:
        return None
    old = rng.choice(inputs).name
    new = rng.choice(["mel", "x", old + "_renamed"])
    for graph in _graphs(model.graph):
        for node in graph.node:
            for k, name in enumerate(node.input):
                if name == old:
                    node.input[k] = new
    next(v for v in model.graph.input if v.name == old).name = new
    return _serialize(model)


def rename_output(model, rng):
    if not model.graph.output:
        return None
    out = rng.choice(list(model.graph.output))
    old, new = out.name, out.name + "_renamed"
    for graph in _graphs(model.graph):
        for node in graph.node:
            for k, name in enumerate(node.output):
                if name == old:
                    node.output[k] = new
    out.name = new
    return _serialize(model)


def input_type(model, rng):
    if not model.graph.input:
        return None
    value = rng.choice(list(model.graph.input))
    tensor = value.type.tensor_type
    if rng.random() < 0.5:
        tensor.elem_type = rng.choice([onnx.TensorProto.DOUBLE, onnx.TensorProto.INT64, onnx.TensorProto.STRING])
    else:
        tensor.shape.ClearField("dim")
        for size in rng.choice([[], [1], [2, 3, 4, 5], [0, 80, 2]]):
            tensor.shape.dim.add().dim_value = size
    return _serialize(model)


def drop_graph_io(model, rng):
    field = rng.choice([model.graph.input, model.graph.output])
    if not field:
        return None
    del field[rng.randrange(len(field))]
    return _serialize(model)


def opset(model, rng):
    default = next((o for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if default is None:
        return None
    default.version = rng.choice([7, 99, 0, -1, 1])
    if rng.random() < 0.2:
        model.ir_version = rng.choice([3, 99, 0])
    return _serialize(model)


def value_info(model, rng):
    """value_info that contradicts the graph: another dtype or rank for a real value."""
    graph = _some_graph(model, rng)
    outputs = [o for n in graph.node for o in n.output if o]
    if not outputs:
        return None
    name = rng.choice(outputs)
    shape = rng.choice([[], [1], [7, 7], [2, 3, 4, 5, 6]])
    dtype = rng.choice([onnx.TensorProto.FLOAT, onnx.TensorProto.INT64, onnx.TensorProto.BOOL])
    graph.value_info.append(helper.make_tensor_value_info(name, dtype, shape))
    return _serialize(model)


# --- waveopt metadata -----------------------------------------------------------------------
def _meta(model) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def _set_meta(model, meta: dict[str, str]) -> bytes:
    del model.metadata_props[:]
    helper.set_model_props(model, meta)
    return _serialize(model)


def metadata(model, rng):
    meta = _meta(model)
    if "waveopt.hparams" not in meta:
        return None
    hparams = json.loads(meta["waveopt.hparams"])
    key = rng.choice(sorted(hparams))
    choice = rng.randrange(10)
    if choice == 0:
        meta["waveopt.hparams"] = meta["waveopt.hparams"][: rng.randrange(len(meta["waveopt.hparams"]))]
    elif choice == 1:
        del hparams[key]
        meta["waveopt.hparams"] = json.dumps(hparams)
    elif choice == 2:
        hparams[key] = rng.choice([None, "x", -1, 0, 1.5, [], {}, True, 10**12])
        meta["waveopt.hparams"] = json.dumps(hparams)
    elif choice == 3:
        meta["waveopt.fold"] = rng.choice(['{"target": 8}', "[1, 2]", '{"target": -1, "overlap": 2}',
                                           '{"target": "a", "overlap": 2}', "null", "{"])
    elif choice == 4:
        meta["waveopt.mode"] = rng.choice(["", "MOL", "gauss", "mol", "raw"])
    elif choice == 5:
        meta["waveopt.form"] = rng.choice(["", "teacher_forced", "free_running", "backwards"])
    elif choice == 6:
        meta["waveopt.noise_input"] = rng.choice(["", "mels", "no_such_input"])
    elif choice == 7:
        meta["waveopt.sampled_outputs"] = rng.choice(["", "wave", "no_such_output", ",,"])
    elif choice == 8:
        meta["waveopt.hparams"] = rng.choice(["[]", "null", "1", '"text"', "\u00ff\u00fe", "{}"])
    else:
        del meta[rng.choice(sorted(meta))]
    return _set_meta(model, meta)


MUTATORS: dict[str, Mutator] = {f.__name__: f for f in [
    flip_bytes, truncate, delete_node, duplicate_node, swap_inputs, rewire_input, change_op_type,
    change_attribute, empty_graph, initializer_dims, initializer_dtype, initializer_nonfinite,
    remove_initializer, loop_trip_count, loop_condition, body_outputs, loop_outputs, rename_input,
    rename_output, input_type, drop_graph_io, opset, value_info, metadata,
]}


def mutate(model: onnx.ModelProto, rng: random.Random) -> tuple[str, bytes]:
    """One mutant of ``model`` (left unchanged): (mutator name, file bytes)."""
    names = sorted(MUTATORS)
    while True:
        name = rng.choice(names)
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        data = MUTATORS[name](copy, rng)
        if data is not None:
            return name, data
