"""Small onnx_ir helpers shared by the rewriting passes: constants, fresh names, node building."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import onnx_ir as ir

from waveopt.graph import iter_graphs



def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The value as a numpy array if it is an initializer or a Constant's tensor, else None."""
    if value is None:
        return None
    if value.const_value is not None:
        return value.const_value.numpy()
    node = value.producer()
    if node is not None and node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
        attr = node.attributes.get("value")
        if attr is not None and attr.type == ir.AttributeType.TENSOR:
            return attr.as_tensor().numpy()
    return None


def const_ints(value: ir.Value | None) -> list[int] | None:
    array = const_array(value)
    if array is None or array.dtype.kind not in "iu":
        return None
    return [int(v) for v in np.asarray(array).reshape(-1)]


def is_default_domain(node: ir.Node) -> bool:
    return node.domain in ("", "ai.onnx")


class Names:
    """Fresh value and node names, unique across every graph of a model."""

    def __init__(self, model: ir.Model) -> None:
        self._taken: set[str] = set()
        for graph in iter_graphs(model.graph):
            self._taken.update(v.name for v in graph.inputs if v.name)
            self._taken.update(graph.initializers)
            for node in graph:
                self._taken.update(v.name for v in node.outputs if v.name)
                if node.name:
                    self._taken.add(node.name)

    def __call__(self, base: str) -> str:
        name, i = base, 1
        while name in self._taken:
            name, i = f"{base}_{i}", i + 1
        self._taken.add(name)
        return name


def add_initializer(graph: ir.Graph, names: Names, base: str, array: np.ndarray) -> ir.Value:
    """Register ``array`` as a new initializer of ``graph`` under a fresh name."""
    name = names(base)
    tensor = ir.tensor(np.ascontiguousarray(array), name=name)
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(tensor.dtype),
                     const_value=tensor)
    graph.register_initializer(value)
    return value


class Emitter:
    """Builds nodes into ``graph`` before ``anchor`` (after it with ``after=True``; at the
    end without an anchor), in the order they are built, named and tagged with ``metadata``."""

    def __init__(self, graph: ir.Graph, names: Names, root: ir.Graph, metadata: dict[str, str],
                 anchor: ir.Node | None = None, prefix: str = "", after: bool = False) -> None:
        self.graph, self.names, self.root = graph, names, root
        self.metadata, self.anchor, self.prefix, self.after = dict(metadata), anchor, prefix, after
        self.nodes: list[ir.Node] = []
        self._consts: dict[tuple, ir.Value] = {}

    def op(self, op_type: str, inputs: Sequence[ir.Value | None], n_out: int = 1,
           name: str = "", **attrs) -> list[ir.Value]:
        node = ir.Node("", op_type, inputs, num_outputs=n_out,
                       attributes=[ir.convenience.convert_attribute(k, v) for k, v in attrs.items()],
                       metadata_props=dict(self.metadata))
        base = f"{self.prefix}{name or op_type.lower()}"
        node.name = self.names(base)
        for i, out in enumerate(node.outputs):
            out.name = self.names(base if n_out == 1 else f"{base}_{i}")
        if self.anchor is None:
            self.graph.append(node)
        elif self.after:
            self.graph.insert_after(self.anchor, node)
            self.anchor = node
        else:
            self.graph.insert_before(self.anchor, node)
        self.nodes.append(node)
        return list(node.outputs)

    def one(self, op_type: str, inputs: Sequence[ir.Value | None], name: str = "", **attrs) -> ir.Value:
        return self.op(op_type, inputs, 1, name, **attrs)[0]

    def ints(self, values: Iterable[int], base: str = "const") -> ir.Value:
        """An int64 1-D initializer of the root graph (shared per pass call)."""
        values = tuple(int(v) for v in values)
        key = ("i64", values)
        if key not in self._consts:
            self._consts[key] = add_initializer(self.root, self.names, f"{self.prefix}{base}",
                                                np.array(values, np.int64))
        return self._consts[key]

    def weight(self, array: np.ndarray, base: str) -> ir.Value:
        return add_initializer(self.root, self.names, f"{self.prefix}{base}", np.asarray(array, np.float32))


def remove_if_dead(values: Iterable[ir.Value | None]) -> None:
    """Remove the producers of unused values (recursively up their inputs) and unused
    initializers. Graph inputs and outputs are never removed."""
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
        stack.extend(v for v in inputs if v is not None)


def replace_value(old: ir.Value, new: ir.Value, names: Names) -> None:
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
        node = ir.Node("", "Identity", [new], num_outputs=1,
                       metadata_props=dict(old.producer().metadata_props) if old.producer() else None)
        old.name = names(f"{name}_replaced")
        node.outputs[0].name = name
        node.outputs[0].type, node.outputs[0].shape = old.type, old.shape
        graph.append(node)
        old.replace_all_uses_with(node.outputs[0], replace_graph_outputs=True)
        return
    old.replace_all_uses_with(new, replace_graph_outputs=True)
    old.name = names(f"{name}_replaced")
    new.name = name
    new.type = old.type or new.type  # a graph output keeps its declared type and shape
    new.shape = old.shape or new.shape
