"""MACs and weight bytes of each module, counted from the graph, per generated sample.

- Inside an outer Loop's body (nested subgraphs included): ``report.py``'s MAC rules,
  which count per Loop step and batch row, i.e. per sample. Weights: the bytes of the
  constant tensors (initializers, Constants) the module's nodes read, once per step; a
  step makes ``sequences`` samples, so per sample they are divided by it.
- In the main graph (conditioning, post-processing, projections hoisted out of the loop):
  at the shapes the node ran with (ORT's profile) or else inferred for the actual inputs,
  MatMul / Gemm cost output size x inner dim,
  Conv weight size x output positions (x batch), ConvTranspose the same over input
  positions; the totals and weight bytes of a run are divided by the samples of a run.
Without a Loop the same main-graph rules give MACs and weight bytes per run.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import onnx
import onnx_ir as ir

from waveopt.graph import infer_shapes
from waveopt.report import LoopInvariance, counts_macs, node_macs  # report.py's MAC rules 1-4

__all__ = ["ModuleCost", "module_costs"]


@dataclasses.dataclass
class ModuleCost:
    macs_per_sample: float = 0.0
    weight_bytes: int = 0  # distinct weights the module reads (step and main graph)
    weight_bytes_per_sample: float = 0.0
    uncounted: list[str] = dataclasses.field(default_factory=list)  # matrix ops no rule could count


def module_costs(model: onnx.ModelProto, labels: dict[str, str], feed_shapes: dict[str, list[int]],
                 samples_per_run: int, sequences: int,
                 runtime_shapes: dict[str, tuple[list, list]] | None = None) -> dict[str, ModuleCost]:
    """Per-module costs; ``labels`` maps node names (unique) to modules.

    ``runtime_shapes``: node name -> (input shapes, output shapes) as ORT ran them; for a
    main-graph node that kept its name they win over the inferred ones.
    """
    runtime_shapes = runtime_shapes or {}
    graph = ir.serde.deserialize_model(_with_shapes(model, feed_shapes)).graph
    costs: dict[str, ModuleCost] = {}
    seen_weights: dict[str, set[int]] = {}

    def add_weights(module: str, node: ir.Node, per: float) -> None:
        cost = costs.setdefault(module, ModuleCost())
        for value in node.inputs:
            nbytes = _constant_bytes(value)
            if nbytes and id(value) not in seen_weights.setdefault(module, set()):
                seen_weights[module].add(id(value))
                cost.weight_bytes += nbytes
                cost.weight_bytes_per_sample += nbytes / per

    for node in graph:
        module = labels.get(node.name)
        if module is None:
            continue
        if node.op_type == "Loop" and node.domain in ("", "ai.onnx"):
            _count_body(node.attributes["body"].as_graph(), labels, costs, add_weights, sequences)
            continue
        cost = costs.setdefault(module, ModuleCost())
        macs = _main_graph_macs(node, runtime_shapes.get(node.name))
        if macs is None:
            cost.uncounted.append(f"{node.op_type} ({node.name})")
        else:
            cost.macs_per_sample += macs / samples_per_run
        add_weights(module, node, samples_per_run)
    return costs


def _count_body(body: ir.Graph, labels, costs, add_weights, sequences: int) -> None:
    invariant = LoopInvariance(body)
    for node in ir.traversal.RecursiveGraphIterator(body):
        module = labels.get(node.name)
        if module is None:
            continue
        cost = costs.setdefault(module, ModuleCost())
        if counts_macs(node):
            macs = node_macs(node, invariant)
            if macs is None:
                cost.uncounted.append(f"{node.op_type} ({node.name})")
            else:
                cost.macs_per_sample += macs
        add_weights(module, node, sequences)


def _with_shapes(model: onnx.ModelProto, feed_shapes: dict[str, list[int]]) -> onnx.ModelProto:
    """``model`` with its inputs fixed to the fed shapes, shapes inferred where onnx can."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for value in model.graph.input:
        shape = feed_shapes.get(value.name)
        if shape is None or not value.type.HasField("tensor_type"):
            continue
        dims = value.type.tensor_type.shape.dim
        del dims[:]
        for size in shape:
            dims.add().dim_value = int(size)
    # a model that defeats inference still gets the rules that need no shapes
    return infer_shapes(model) or model


def _static(value: ir.Value | None) -> list[int] | None:
    if value is None or value.shape is None or not all(isinstance(d, int) for d in value.shape):
        return None
    return list(value.shape)


def _main_graph_macs(node: ir.Node, ran: tuple[list, list] | None) -> int | None:
    """MACs of one main-graph node at the shapes it ran with (else inferred); 0 for ops that multiply no matrices."""
    op = node.op_type if node.domain in ("", "ai.onnx") else None

    def shape(index: int, outputs: bool = False) -> list[int] | None:
        side = ran[1 if outputs else 0] if ran is not None else []
        if index < len(side) and side[index]:
            return list(side[index])
        values = node.outputs if outputs else node.inputs
        return _static(values[index]) if index < len(values) else None

    if op in ("MatMul", "MatMulInteger", "Gemm"):
        a, out = shape(0), shape(0, outputs=True)
        if a is None or out is None:
            return None
        trans_a = op == "Gemm" and node.attributes.get_int("transA", 0)
        inner = a[-2] if trans_a else a[-1]
        return math.prod(out) * inner
    if op in ("Conv", "ConvInteger", "ConvTranspose"):
        weight = _static(node.inputs[1])
        positions = shape(0) if op == "ConvTranspose" else shape(0, outputs=True)
        if weight is None or positions is None:
            return None
        return math.prod(weight) * positions[0] * math.prod(positions[2:])
    if counts_macs(node) or (node.domain not in ("", "ai.onnx") and "MatMul" in node.op_type):
        return None  # GRU, Einsum, ...: not counted outside a Loop
    return 0


def _constant_bytes(value: ir.Value | None) -> int:
    if value is None:
        return 0
    if value.const_value is not None:
        return int(value.const_value.nbytes)
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant" and "value" in producer.attributes:
        tensor = producer.attributes["value"].as_tensor()
        return int(np.prod(tensor.shape, dtype=np.int64)) * tensor.dtype.itemsize
    return 0
