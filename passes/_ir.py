"""The one helper layer of the passes: constants, static shapes, node building (one
``Builder``: names, nodes, initializers), dead-code removal, the subgraph walk and the
native ops' domain.

Private to ``waveopt.passes``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import onnx_ir as ir

from waveopt.graph import infer_shapes, iter_graphs, iter_proto_graphs
from waveopt.native_library import DOMAIN
from waveopt.provenance import MODULE_KEY

__all__ = [
    "DOMAIN",
    "MODULE_KEY",
    "constant_float64",
    "is_default_domain",
    "remove_dead_initializers",
    "replace_value",
    "Builder",
    "Cursor",
    "ShapeInfo",
    "const_array",
    "is_onnx_op",
    "loop_bodies",
    "remove_dead",
    "outputs_of",
    "dims_with",
    "set_shape",
    "int_list",
]

def is_onnx_op(node: ir.Node, *op_types: str) -> bool:
    return is_default_domain(node) and node.op_type in op_types


def loop_bodies(graph: ir.Graph) -> Iterator[tuple[ir.Node, ir.Graph]]:
    """(Loop node, its body) for every Loop, outermost first, nested ones included."""
    for node in list(ir.traversal.RecursiveGraphIterator(graph)):
        if is_onnx_op(node, "Loop") and "body" in node.attributes:
            yield node, node.attributes["body"].as_graph()


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The value as a numpy array when it is a constant (initializer or Constant node).

    The one rule of every pass: an initializer that is also a graph input can be
    overridden at run time, so it is not constant.
    """
    if value is None:
        return None
    if value.const_value is not None:
        return None if value.is_graph_input() else value.const_value.numpy()
    node = value.producer()
    if node is None or not is_onnx_op(node, "Constant"):
        return None
    attr = node.attributes.get("value")
    if attr is not None:
        if attr.is_ref() or attr.type != ir.AttributeType.TENSOR:
            return None
        return attr.as_tensor().numpy()
    for key, dtype in _SCALAR_CONSTANTS.items():
        if key in node.attributes and not node.attributes[key].is_ref():
            return np.asarray(node.attributes[key].value, dtype=dtype)
    return None


_SCALAR_CONSTANTS = {"value_float": np.float32, "value_floats": np.float32,
                     "value_int": np.int64, "value_ints": np.int64}


def constant_float64(value: ir.Value | None) -> np.ndarray | None:
    """``const_array`` in float64 (the linear-form algebra's precision), else None."""
    array = const_array(value)
    return None if array is None else np.asarray(array, dtype=np.float64)


def is_default_domain(node: ir.Node) -> bool:
    return node.domain in ("", "ai.onnx")


def int_list(value: ir.Value | None) -> list[int] | None:
    array = const_array(value)
    if array is None or array.dtype.kind not in "iu":
        return None
    return [int(v) for v in array.reshape(-1)]


class ShapeInfo:
    """Static dims of values: their own shape annotation, else ONNX shape inference, else
    a few local rules (ONNX inference gives up inside Loop bodies whose ops read axes or
    shapes from outer-scope initializers).

    Inference runs once, lazily, on a serialized copy; the model itself is not touched.
    """

    def __init__(self, model: ir.Model) -> None:
        self._model = model
        self._inferred: dict[str, list[int | None]] | None = None
        self._local: dict[ir.Value, list | None] = {}

    def dims(self, value: ir.Value | None) -> list[int | str | None] | None:
        """Dims: ints, names of symbolic dims, None where unknown; None when even the rank is."""
        if value is None:
            return None
        array = const_array(value)
        if array is not None:
            return list(array.shape)
        if value.shape is not None:
            return [d if isinstance(d, int) else d.value for d in value.shape.dims]
        if value not in self._local:
            self._local[value] = None  # no cycles in a graph, but stay safe
            local = _local_dims(value, self)
            if local is None or None in local:
                local = _merge(local, self._inferred_dims().get(value.name) if value.name else None)
            self._local[value] = local
        return self._local[value]

    def rank(self, value: ir.Value | None) -> int | None:
        dims = self.dims(value)
        return None if dims is None else len(dims)

    def last_dim(self, value: ir.Value | None) -> int | None:
        """The static size of the last axis, else None."""
        dims = self.dims(value)
        return dims[-1] if dims and isinstance(dims[-1], int) else None

    def _inferred_dims(self) -> dict[str, list[int | None]]:
        if self._inferred is None:
            self._inferred = {}
            proto = infer_shapes(ir.serde.serialize_model(self._model), data_prop=False)
            if proto is None:  # a model that defeats inference just has fewer known shapes
                return self._inferred
            for graph in iter_proto_graphs(proto.graph):
                for vi in [*graph.value_info, *graph.input, *graph.output]:
                    t = vi.type.tensor_type
                    if vi.type.HasField("tensor_type") and t.HasField("shape"):
                        self._inferred.setdefault(vi.name, [
                            d.dim_value if d.HasField("dim_value") else _dim_name(d.dim_param)
                            for d in t.shape.dim])
        return self._inferred


def _dim_name(name: str) -> str | None:
    """A dim name, unless it is one that shape inference made up for an unknown dim."""
    return None if not name or name.startswith("unk__") else name


def _merge(local: list | None, inferred: list | None) -> list | None:
    """The local rules' dims, completed by ONNX inference's where they know nothing."""
    if local is None or inferred is None or len(local) != len(inferred):
        return local if local is not None else inferred
    return [a if a is not None else b for a, b in zip(local, inferred)]


_SAME_SHAPE = {"Abs", "Cast", "CastLike", "Ceil", "Clip", "Cos", "CumSum", "Elu", "Erf", "Exp", "Floor",
               "Gelu", "HardSigmoid", "Identity", "LeakyRelu", "Log", "LogSoftmax", "Neg", "Not",
               "Reciprocal", "Relu", "Round", "Selu", "Sigmoid", "Sign", "Sin", "Softmax", "Softplus",
               "Softsign", "Sqrt", "Tanh"}
_BROADCAST = {"Add", "And", "Div", "Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Max",
              "Min", "Mod", "Mul", "Or", "Pow", "PRelu", "Sub", "Sum", "Where", "Xor"}


def _local_dims(value: ir.Value, shapes: ShapeInfo) -> list | None:
    """Dims of a node output from its inputs' dims, for the ops a WaveRNN step uses."""
    node = value.producer()
    if node is None or node.domain not in ("", "ai.onnx"):
        return None
    op, ins = node.op_type, [shapes.dims(v) if v is not None else None for v in node.inputs]
    if op in _SAME_SHAPE:
        return ins[0]
    if op in _BROADCAST:
        known = [d for v, d in zip(node.inputs, ins) if v is not None]
        return None if any(d is None for d in known) else _broadcast(known)
    if op == "MatMul":
        a, b = ins
        return None if a is None or b is None or len(b) != 2 or not a else [*a[:-1], b[-1]]
    if op == "Gemm":
        return _gemm_dims(node, ins)
    x = ins[0] if ins else None
    rule = _AXIS_RULES.get(op)
    return None if x is None or rule is None else rule(node, value, x, ins)


def _gemm_dims(node: ir.Node, ins: list) -> list | None:
    a, b = ins[0], ins[1]
    if a is None or b is None or len(a) != 2 or len(b) != 2:
        return None
    return [a[1] if node.attributes.get_int("transA", 0) else a[0],
            b[0] if node.attributes.get_int("transB", 0) else b[1]]


def _concat_dims(node: ir.Node, value: ir.Value, x: list, ins: list) -> list | None:
    rank = len(x)
    axis = node.attributes.get_int("axis", 0) % rank
    if any(d is None or len(d) != rank for d in ins):
        return None
    sizes = [d[axis] for d in ins]
    return [*x[:axis], sum(sizes) if all(isinstance(s, int) for s in sizes) else None, *x[axis + 1:]]


def _split_dims(node: ir.Node, value: ir.Value, x: list, ins: list) -> list | None:
    axis = node.attributes.get_int("axis", 0) % len(x)
    split = int_list(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else None
    if split is None and isinstance(x[axis], int):
        split = [x[axis] // len(node.outputs)] * len(node.outputs)
    return None if split is None else [*x[:axis], split[value.index()], *x[axis + 1:]]


def _slice_dims(node: ir.Node, value: ir.Value, x: list, ins: list) -> list | None:
    rank = len(x)
    starts, ends = int_list(node.inputs[1]), int_list(node.inputs[2])
    axes = int_list(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] is not None else \
        None if starts is None else list(range(len(starts)))
    steps = int_list(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] is not None else \
        None if starts is None else [1] * len(starts)
    if None in (starts, ends, axes, steps):
        return None
    out = list(x)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        size = x[axis % rank]
        out[axis % rank] = len(range(size)[slice(start, end, step)]) if isinstance(size, int) else None
    return out


def _squeeze_dims(node: ir.Node, value: ir.Value, x: list, ins: list) -> list | None:
    rank = len(x)
    axes = int_list(node.inputs[1]) if len(node.inputs) > 1 else None
    if axes is None:
        return None
    if node.op_type == "Squeeze":
        axes = {a % rank for a in axes}
        return [d for i, d in enumerate(x) if i not in axes]
    out_rank = rank + len(axes)
    axes = {a % out_rank for a in axes}
    rest = iter(x)
    return [1 if i in axes else next(rest) for i in range(out_rank)]


def _gather_dims(node: ir.Node, value: ir.Value, x: list, ins: list) -> list | None:
    indices = ins[1]
    if indices is None:
        return None
    axis = node.attributes.get_int("axis", 0) % len(x)
    return [*x[:axis], *indices, *x[axis + 1:]]


# Ops whose output dims follow from the first input's (x) along an axis: (node, value, x, ins) -> dims.
_AXIS_RULES = {"Concat": _concat_dims, "Split": _split_dims, "Slice": _slice_dims,
               "Unsqueeze": _squeeze_dims, "Squeeze": _squeeze_dims, "Gather": _gather_dims}


def _broadcast(all_dims: list[list]) -> list:
    rank = max(len(d) for d in all_dims)
    out = []
    for i in range(rank):
        sizes = [d[i - rank + len(d)] for d in all_dims if i - rank + len(d) >= 0]
        static = {s for s in sizes if isinstance(s, int) and s != 1}
        named = {s for s in sizes if isinstance(s, str)}
        if len(static) == 1:
            out.append(static.pop())
        elif not static and len(named) == 1 and None not in sizes:
            out.append(named.pop())
        elif all(s == 1 for s in sizes):
            out.append(1)
        else:
            out.append(None)
    return out


class Builder:
    """Creates nodes, initializers and fresh names, unique across every graph of the model.

    New nodes carry the ``waveopt.module`` of the node they stand for (``like``), or the
    one named (``module``), or a copy of a whole ``metadata`` dict. Initializers go to the
    main graph, where every subgraph can read them; identical arrays are stored once.
    """

    def __init__(self, model: ir.Model, prefix: str) -> None:
        self.model = model
        self.prefix = prefix
        self._taken = _taken_names(model)
        self._counter = 0
        self._constants: dict[tuple, ir.Value] = {}

    def name(self, hint: str | None = None) -> str:
        """A new ``prefix/hint_N`` name."""
        base = f"{self.prefix}/{hint}" if hint else self.prefix
        while True:
            self._counter += 1
            name = f"{base}_{self._counter}"
            if self._claim(name):
                return name

    def fresh(self, base: str) -> str:
        """``base`` if it is free, else the first free ``base_1``, ``base_2``, ... (for a
        value that gives its name to another)."""
        name, i = base, 1
        while not self._claim(name):
            name, i = f"{base}_{i}", i + 1
        return name

    def _claim(self, name: str) -> bool:
        """Take ``name`` if it is free; whether it was."""
        if name in self._taken:
            return False
        self._taken.add(name)
        return True

    def node(self, op_type: str, inputs: Sequence[ir.Value | None], like: ir.Node | None = None,
             num_outputs: int = 1, attributes: Iterable[ir.Attr] = (), hint: str | None = None,
             domain: str = "", module: str | None = None, metadata: Mapping[str, str] | None = None,
             **attrs) -> ir.Node:
        """A new (not yet inserted) node; ``attrs`` are converted with onnx_ir's rules."""
        node = ir.Node(domain, op_type, inputs, attributes=[*attributes, *ir.convenience.convert_attributes(attrs)],
                       num_outputs=num_outputs, name=self.name(hint or op_type),
                       metadata_props=_metadata(like, module, metadata))
        for out in node.outputs:
            out.name = self.name(hint or op_type)
        return node

    def add_before(self, anchor: ir.Node, op_type: str, inputs: Sequence[ir.Value | None], module: str,
                   **kwargs) -> list[ir.Value]:
        """``node(...)`` for ``module``, inserted before ``anchor`` in its graph; its outputs."""
        node = self.node(op_type, inputs, module=module, **kwargs)
        anchor.graph.insert_before(anchor, node)
        return list(node.outputs)

    def at(self, anchor: ir.Node, after: bool = False, like: ir.Node | None = None,
           metadata: Mapping[str, str] | None = None) -> Cursor:
        """A cursor that inserts the nodes it builds before ``anchor`` (after it with ``after``)."""
        return Cursor(self, anchor, after, like, metadata)

    def constant(self, array: np.ndarray, hint: str = "const") -> ir.Value:
        """An initializer of the main graph holding ``array`` (reused for equal arrays while
        it is still there)."""
        array = np.ascontiguousarray(array)
        key = (array.dtype.str, array.shape, hashlib.sha1(array.tobytes()).hexdigest())
        value = self._constants.get(key)
        if value is None or self.model.graph.initializers.get(value.name) is not value:
            name = self.name(hint)
            value = ir.Value(name=name, type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                             shape=ir.Shape(array.shape), const_value=ir.tensor(array, name=name))
            self.model.graph.register_initializer(value)
            self._constants[key] = value
        return value

    def int64s(self, values: Iterable[int], hint: str = "ints") -> ir.Value:
        return self.constant(np.asarray(list(values), dtype=np.int64), hint)


def _taken_names(model: ir.Model) -> set[str]:
    """The value and node names of every graph of ``model``."""
    taken: set[str] = set()
    for graph in iter_graphs(model.graph):
        taken.update(v.name for v in graph.inputs if v.name)
        taken.update(graph.initializers)
        for node in graph:
            taken.update(v.name for v in node.outputs if v.name)
            if node.name:
                taken.add(node.name)
    return taken


def _metadata(like: ir.Node | None, module: str | None, metadata: Mapping[str, str] | None) -> dict[str, str]:
    """A new node's metadata: a copy of ``metadata``, else ``module`` (else ``like``'s) as the module."""
    if metadata is not None:
        return dict(metadata)
    if module is None and like is not None:
        module = like.metadata_props.get(MODULE_KEY)
    return {MODULE_KEY: module} if module is not None else {}


class Cursor:
    """Builds nodes with a ``Builder`` into ``anchor``'s graph in the order they are built:
    before ``anchor``, or with ``after`` each one after the last (the first after ``anchor``).
    Their metadata is ``like``'s module, or a copy of ``metadata``; ``nodes`` lists them."""

    def __init__(self, builder: Builder, anchor: ir.Node, after: bool, like: ir.Node | None,
                 metadata: Mapping[str, str] | None) -> None:
        self.builder, self.anchor, self.after = builder, anchor, after
        self.like, self.metadata = like, metadata
        self.nodes: list[ir.Node] = []

    def op(self, op_type: str, inputs: Sequence[ir.Value | None], n_out: int = 1,
           name: str = "", **attrs) -> list[ir.Value]:
        """A new node (named after ``name``, else the op) at the cursor; its outputs."""
        node = self.builder.node(op_type, inputs, like=self.like, num_outputs=n_out, hint=name or op_type.lower(),
                                 attributes=ir.convenience.convert_attributes(attrs), metadata=self.metadata)
        if self.after:
            self.anchor.graph.insert_after(self.anchor, node)
            self.anchor = node
        else:
            self.anchor.graph.insert_before(self.anchor, node)
        self.nodes.append(node)
        return list(node.outputs)

    def one(self, op_type: str, inputs: Sequence[ir.Value | None], name: str = "", **attrs) -> ir.Value:
        return self.op(op_type, inputs, 1, name, **attrs)[0]

    def ints(self, values: Iterable[int], hint: str = "ints") -> ir.Value:
        return self.builder.int64s(values, hint)

    def weight(self, array: np.ndarray, hint: str) -> ir.Value:
        return self.builder.constant(np.asarray(array, np.float32), hint)


def set_shape(value: ir.Value, dims: Sequence | None, like: ir.Value | None = None,
              type_from: ir.Value | None = None) -> None:
    """Annotate ``value`` with ``dims`` (ints, symbolic dims or None) and the element type of
    ``like`` (else of ``type_from``); without a known type nothing is annotated."""
    tensor_type = next((v.type for v in (like, type_from) if v is not None and v.type is not None), None)
    if tensor_type is None:
        return
    value.type = tensor_type
    value.shape = None if dims is None else ir.Shape(list(dims))


def dims_with(value: ir.Value | None, shapes: ShapeInfo) -> list | None:
    """``value``'s dims keeping symbolic names (else what ShapeInfo knows), or None."""
    if value is not None and value.shape is not None:
        return list(value.shape.dims)
    return shapes.dims(value)


def remove_dead_initializers(model: ir.Model) -> int:
    """Drop the initializers that no node reads, in the main graph and every subgraph.

    Graph inputs and outputs stay. Run after every pass (``WaveoptPass``), so a rewrite that
    replaces weights never leaves the old ones in the file (ORT would warn "Removing
    initializer" at every session, and the file would carry them). Returns how many went.
    """
    removed = 0
    for graph in iter_graphs(model.graph):
        for name, value in list(graph.initializers.items()):
            if value.uses() or value.is_graph_input() or value.is_graph_output():
                continue
            graph.initializers.pop(name)
            removed += 1
    return removed


def remove_dead(values: Iterable[ir.Value | None]) -> int:
    """Remove what only ``values`` kept alive; returns how many nodes went.

    The one rule of every pass: a node is dead when none of its outputs is read or is a
    graph output. Removing it may leave its inputs unread, so their producers (in any
    graph) are tried next, and an initializer nothing reads any more is dropped. Graph
    inputs and outputs stay, and so does a node holding a subgraph (its body's reads of
    outer values would outlive it).
    """
    removed = 0
    stack = [v for v in values if v is not None]
    while stack:
        value = stack.pop()
        if value.uses() or value.is_graph_output() or value.is_graph_input():
            continue
        if value.is_initializer():
            graph = value.graph
            if graph is not None and graph.initializers.get(value.name) is value:
                graph.initializers.pop(value.name)
            continue
        node = value.producer()
        if node is None or node.graph is None:
            continue
        if any(out.uses() or out.is_graph_output() for out in node.outputs):
            continue
        if any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for a in node.attributes.values()):
            continue
        inputs = list(node.inputs)
        node.graph.remove(node, safe=True)
        removed += 1
        stack.extend(v for v in inputs if v is not None)
    return removed


def outputs_of(nodes: Iterable[ir.Node]) -> list[ir.Value]:
    """Every output of ``nodes``: what ``remove_dead`` takes to try removing them."""
    return [out for node in nodes for out in node.outputs]


def replace_value(old: ir.Value, new: ir.Value, builder: Builder) -> None:
    """Make every user of ``old`` (graph outputs included) read ``new``.

    A graph output keeps its name: ``new`` takes it over, unless ``new`` is already a
    graph input/output/initializer, in which case an Identity named like ``old`` is added.
    """
    if not old.is_graph_output():
        old.replace_all_uses_with(new)
        return
    graph = old.graph
    name = old.name
    if new.is_graph_output() or new.is_graph_input() or new.is_initializer():
        producer = old.producer()
        node = builder.node("Identity", [new], metadata=producer.metadata_props if producer is not None else {})
        old.name = builder.fresh(f"{name}_replaced")
        node.outputs[0].name = name
        node.outputs[0].type, node.outputs[0].shape = old.type, old.shape
        graph.append(node)
        old.replace_all_uses_with(node.outputs[0], replace_graph_outputs=True)
        return
    old.replace_all_uses_with(new, replace_graph_outputs=True)
    old.name = builder.fresh(f"{name}_replaced")
    new.name = name
    new.type = old.type or new.type  # a graph output keeps its declared type and shape
    new.shape = old.shape or new.shape
