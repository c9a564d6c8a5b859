"""Model I/O and graph walking helpers shared by passes, reports and checks."""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Iterator
from pathlib import Path

import onnx
import onnx_ir as ir

from waveopt.errors import WaveoptError, one_line

__all__ = [
    "atomic_write_bytes",
    "remove_stale_temp_files",
    "subgraphs",
    "infer_shapes",
    "iter_graphs",
    "iter_nodes",
    "iter_proto_graphs",
    "iter_proto_nodes",
    "proto_subgraphs",
    "load_model",
    "loop_nodes",
    "lowest_ir_version",
    "prune_graph",
    "save_model",
    "to_ir",
    "to_proto",
]

AnyModel = onnx.ModelProto | ir.Model


def load_model(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Read an ONNX model (and its external data); never modifies the file."""
    path = Path(path)
    if not path.exists():
        raise WaveoptError(f"no such file: {path}")
    if path.is_dir():
        raise WaveoptError(f"{path} is a directory, not an ONNX model")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as e:  # DecodeError, OSError, ...: all mean "not a model"
        raise WaveoptError(f"{path} is not a valid ONNX model ({one_line(e, 200)})") from e
    # protobuf happily parses many garbage byte strings into a near-empty message.
    problem = _structural_problem(model)
    if problem:
        raise WaveoptError(f"{path} is not a valid ONNX model ({problem})")
    try:  # a no-op unless some tensor lives in an external file
        onnx.load_external_data_for_model(model, str(path.parent))
    except Exception as e:
        raise WaveoptError(f"{path}: cannot load external data ({one_line(e, 200)})") from e
    return model


def _structural_problem(model: onnx.ModelProto) -> str:
    if model.ir_version <= 0:
        return "ir_version is 0"
    if not model.opset_import:
        return "no opset_import"
    if not model.HasField("graph"):
        return "no graph"
    if not model.graph.output:
        return "graph has no outputs"
    return ""


def save_model(model: AnyModel, path: str | os.PathLike[str]) -> None:
    """Write a model atomically (see :func:`atomic_write_bytes`) at :func:`lowest_ir_version`.

    The caller's model is left as it was (its ``ir_version`` is set only while serialising).
    """
    proto = to_proto(model)
    written_as = proto.ir_version
    proto.ir_version = lowest_ir_version(proto)
    try:
        data = proto.SerializeToString()
    finally:
        proto.ir_version = written_as
    atomic_write_bytes(path, data)


# Element types up to BFLOAT16 exist since IR 6; FLOAT8* (IR 9) and every later type need newer IRs.
_NEWEST_OLD_TYPE = onnx.TensorProto.BFLOAT16


def lowest_ir_version(model: onnx.ModelProto) -> int:
    """The lowest IR version that can carry ``model``, never above its own ``ir_version``.

    Older runtimes refuse newer IRs (ORT 1.17 reads IR <= 9) although a model at opset 18 needs
    only IR 8: the opsets decide (``onnx.helper.find_min_ir_version_for``; custom domains do not
    count). Models with local functions or element types newer than BFLOAT16 keep their version.
    """
    if model.functions or any(_uses_newer_types(g) for g in iter_proto_graphs(model.graph)):
        return model.ir_version
    needed = onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    return min(model.ir_version, needed)


def _uses_newer_types(graph: onnx.GraphProto) -> bool:
    """Whether one graph, not its subgraphs, names an element type newer than BFLOAT16."""
    types = [t.data_type for t in graph.initializer]
    types += [t.values.data_type for t in graph.sparse_initializer]
    types += [v.type.tensor_type.elem_type for v in (*graph.input, *graph.output, *graph.value_info)]
    for node in graph.node:
        for attr in node.attribute:
            if attr.name == "to" and attr.type == onnx.AttributeProto.INT:
                types.append(attr.i)
            types += [t.data_type for t in (attr.t, *attr.tensors)]
    return any(t > _NEWEST_OLD_TYPE for t in types)


TEMP_MARK = ".waveopt-tmp-"


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write atomically: a temp file ``.<name>.waveopt-tmp-<pid>`` in the same directory, fsync,
    then os.replace.

    The temp file is removed on any failure, an interrupt included; one left by a process
    that was killed (SIGKILL, power loss) is recognisable by its name and removed by the next
    write to the same path once its process is gone (:func:`remove_stale_temp_files`).
    """
    path = Path(path)
    remove_stale_temp_files(path)
    tmp = path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")
    try:
        tmp.unlink(missing_ok=True)  # ours by name: a dead process with our pid left it
        # os.open with 0o666 lets the umask decide the final permissions.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise WaveoptError(f"cannot write {path}: {e.strerror or e}") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temp_files(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temp files of writes to ``path`` whose process no longer runs; returns them."""
    path = Path(path)
    removed = []
    try:
        candidates = list(path.parent.glob(f".{glob.escape(path.name)}{TEMP_MARK}*"))
    except OSError:
        return removed
    for tmp in candidates:
        pid = tmp.name.rsplit(TEMP_MARK, 1)[1]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_runs(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def _process_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def to_ir(model: AnyModel) -> ir.Model:
    """An ``ir.Model`` view of ``model``; an ``ir.Model`` is returned as is."""
    if isinstance(model, ir.Model):
        return model
    if isinstance(model, onnx.ModelProto):
        return ir.serde.deserialize_model(model)
    raise TypeError(f"expected onnx.ModelProto or onnx_ir.Model, got {type(model).__name__}")


def to_proto(model: AnyModel) -> onnx.ModelProto:
    """A ``ModelProto`` of ``model``; a ``ModelProto`` is returned as is."""
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, ir.Model):
        return ir.serde.serialize_model(model)
    raise TypeError(f"expected onnx.ModelProto or onnx_ir.Model, got {type(model).__name__}")


def iter_graphs(graph: ir.Graph) -> Iterator[ir.Graph]:
    """Yield ``graph`` and every subgraph below it (Loop/If/Scan bodies), recursively."""
    yield graph
    for node in ir.traversal.RecursiveGraphIterator(graph):
        yield from subgraphs(node)


def loop_nodes(graph: ir.Graph) -> Iterator[ir.Node]:
    """Yield every Loop node, in the main graph or in any subgraph."""
    for node in ir.traversal.RecursiveGraphIterator(graph):
        if node.op_type == "Loop" and node.domain in ("", "ai.onnx"):
            yield node


def iter_nodes(graph: ir.Graph, in_loop: bool = False) -> Iterator[tuple[ir.Node, bool]]:
    """Yield ``(node, inside_a_loop_body)`` for every node, subgraphs included."""
    for node in graph:
        yield node, in_loop
        enters_loop = in_loop or (node.op_type == "Loop" and node.domain in ("", "ai.onnx"))
        for sub in subgraphs(node):
            yield from iter_nodes(sub, enters_loop)


def subgraphs(node: ir.Node) -> Iterator[ir.Graph]:
    """The graphs held by a node's attributes (Loop/If/Scan bodies), one level down."""
    for attr in node.attributes.values():
        if attr.is_ref():
            continue
        if attr.type == ir.AttributeType.GRAPH:
            yield attr.as_graph()
        elif attr.type == ir.AttributeType.GRAPHS:
            yield from attr.as_graphs()


def prune_graph(graph: onnx.GraphProto) -> None:
    """Drop, in place, the nodes, inputs and initializers ``graph``'s outputs do not need
    (a node's subgraphs count as reading every name used inside them)."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(node.input)
            needed.update(_names_read_inside(node))
    for field, items in ((graph.node, list(reversed(keep))),
                         (graph.input, [i for i in graph.input if i.name in needed]),
                         (graph.initializer, [t for t in graph.initializer if t.name in needed])):
        del field[:]
        field.extend(items)


def _names_read_inside(node: onnx.NodeProto) -> set[str]:
    """Every name a node's subgraphs read (a superset of what they take from outside)."""
    names: set[str] = set()
    for sub in proto_subgraphs(node):
        for graph in iter_proto_graphs(sub):
            names.update(name for inner in graph.node for name in inner.input)
            names.update(o.name for o in graph.output)
    return names


def proto_subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """The graphs held by a NodeProto's attributes (Loop/Scan body, If branches)."""
    for attr in node.attribute:
        if attr.HasField("g"):
            yield attr.g
        yield from attr.graphs


def iter_proto_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every subgraph nested in it, outermost first (the protobuf twin of
    :func:`iter_graphs`)."""
    yield graph
    for node in graph.node:
        for sub in proto_subgraphs(node):
            yield from iter_proto_graphs(sub)


def iter_proto_nodes(graph: onnx.GraphProto, in_loop: bool = False) -> Iterator[tuple[onnx.NodeProto, bool]]:
    """Yield ``(node, inside_a_loop_body)`` for every NodeProto, each node before the nodes of
    its subgraphs (the protobuf twin of :func:`iter_nodes`)."""
    for node in graph.node:
        yield node, in_loop
        enters_loop = in_loop or (node.op_type == "Loop" and node.domain in ("", "ai.onnx"))
        for sub in proto_subgraphs(node):
            yield from iter_proto_nodes(sub, enters_loop)


def infer_shapes(model: onnx.ModelProto, data_prop: bool = True) -> onnx.ModelProto | None:
    """A copy of ``model`` with ONNX shape inference applied, or None when inference fails
    (shapes are a help to every caller, never a requirement)."""
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=data_prop)
    except Exception:
        return None
