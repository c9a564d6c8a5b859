"""Evaluate a value computed only from constants (loop-invariant work on outer-scope weights).

``constant_value(v)`` follows v's producers up to initializers (of any enclosing graph),
Constant nodes, and ``Shape`` of values whose dims it reads are static; the nodes in
between (Slice, Concat, Unsqueeze, Mul, ... as the dynamo exporter writes to re-slice
``nn.GRU`` weights into ONNX gate order every step) are run once with the ONNX reference
evaluator. Anything else (a graph input, a node with a subgraph, a random op) gives None.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx.reference import ReferenceEvaluator

from waveopt.passes._ir import const_array, is_default_domain

__all__ = ["constant_value"]

_MAX_NODES = 200
_NONDETERMINISTIC = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
                     "Bernoulli"}


def constant_value(value: ir.Value | None) -> np.ndarray | None:
    """``value`` as an array if it depends only on constants, else None."""
    if value is None:
        return None
    known = const_array(value)
    if known is not None:
        return known
    leaves: dict[str, np.ndarray] = {}
    nodes: list[ir.Node] = []
    seen: set[int] = set()
    stack = [value]
    while stack:
        current = stack.pop()
        array = const_array(current)
        if array is not None:
            leaves[current.name] = array
            continue
        node = current.producer()
        if node is None or not is_default_domain(node) or node.op_type in _NONDETERMINISTIC:
            return None
        if any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for a in node.attributes.values()):
            return None
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type == "Shape":
            shape = _static_shape(node)
            if shape is None:
                return None
            leaves[current.name] = shape
            continue
        nodes.append(node)
        if len(nodes) > _MAX_NODES:
            return None
        stack.extend(v for v in node.inputs if v is not None)
    if not value.name or any(not name for name in leaves):
        return None
    return _run(nodes, leaves, value)


def _static_shape(node: ir.Node) -> np.ndarray | None:
    shape = node.inputs[0].shape
    if shape is None:
        return None
    rank = len(shape)
    start = node.attributes.get_int("start", 0)
    end = node.attributes.get_int("end", rank)
    start, end = (s + rank if s < 0 else s for s in (start, end))
    dims = list(shape)[max(0, start):min(rank, end)]
    if not all(isinstance(d, int) for d in dims):
        return None
    return np.array(dims, np.int64)


def _run(nodes: list[ir.Node], leaves: dict[str, np.ndarray], value: ir.Value) -> np.ndarray | None:
    """Run ``nodes`` (in dependency order) on the leaves; the array of ``value``."""
    pending, done, protos = list(nodes), set(), []
    members = {id(n) for n in nodes}
    while pending:
        ready = [n for n in pending if all(v is None or v.producer() is None or id(v.producer()) not in members
                                           or id(v.producer()) in done for v in n.inputs)]
        if not ready:
            return None
        for node in ready:
            protos.append(ir.serde.serialize_node(node))
            done.add(id(node))
            pending.remove(node)
    try:
        graph = onnx.helper.make_graph(
            protos, "const_eval", [],
            [onnx.helper.make_tensor_value_info(value.name, onnx.TensorProto.UNDEFINED, None)],
            [onnx.numpy_helper.from_array(np.asarray(a), name) for name, a in leaves.items()])
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
        return np.asarray(ReferenceEvaluator(model).run(None, {})[0])
    except Exception:
        return None
