"""Assemble one-step ONNX graphs into a whole-generation model: the ONNX ``Loop`` around a step.

The exporter (``waveopt.models.export``) and the public builder (``waveopt.loop.from_step``)
both build their models with these helpers::

    main graph:  outer tensors [T, B, ...] ─┐
                 initial carried values ────┤
    Loop(T) body: t ─ Gather(outer, t) ─> step inputs ─ step nodes ─> step outputs
                  carried: step output i feeds step input j at the next step
                  scanned: step outputs stacked over t ─> [T, ...]

The step's initializers become initializers of the main graph that the body reads from
the outer scope; names are prefixed so they stay unique. Torch-free (onnx_ir only).
"""

from __future__ import annotations

import dataclasses

import onnx_ir as ir

from waveopt.provenance import MODULE_KEY

__all__ = ["PerStep", "adopt_graph", "take_outputs", "add_node", "const_i64",
           "build_step_loop", "tag_module"]

FLOAT = ir.DataType.FLOAT
INT64 = ir.DataType.INT64


def adopt_graph(source: ir.Model, target: ir.Graph, prefix: str, nodes_into: ir.Graph | None = None,
                module: str = "", scopes: dict[str, str] | None = None) -> list[ir.Value]:
    """Move ``source``'s initializers into ``target`` and its nodes into ``nodes_into``.

    Values are renamed ``prefix/...`` so names stay unique across the main graph and the
    Loop body; every node gets ``waveopt.module`` (from the exporter's name scopes by
    ``scopes``, else ``module``). Returns the source's graph inputs, detached so the
    caller can rewire them.
    """
    graph = source.graph
    nodes_into = nodes_into if nodes_into is not None else target
    for value in list(graph.initializers.values()):
        graph.initializers.pop(value.name)
        value.name = f"{prefix}/{value.name}"
        target.register_initializer(value)
    inputs = list(graph.inputs)
    graph.inputs.clear()
    for value in inputs:
        value.name = f"{prefix}/{value.name}"
    for node in list(graph):
        graph.remove(node)
        node.name = f"{prefix}/{node.name}" if node.name else None
        tag_module(node, module, scopes or {})
        for out in node.outputs:
            if out.name:
                out.name = f"{prefix}/{out.name}"
        nodes_into.append(node)
    return inputs


def tag_module(node: ir.Node, default: str, scopes: dict[str, str]) -> None:
    """Set ``waveopt.module`` from the torch exporter's name scopes (``scopes``: scope ->
    module), else keep the node's own or use ``default``; drop the exporter's metadata."""
    names = node.metadata_props.get("pkg.torch.onnx.name_scopes", "")
    module = next((name for scope, name in scopes.items() if f"'{scope}'" in names), None)
    for key in [k for k in node.metadata_props if k.startswith("pkg.torch.") or k == "namespace"]:
        del node.metadata_props[key]
    module = module or node.metadata_props.get(MODULE_KEY) or default
    if module:
        node.metadata_props[MODULE_KEY] = module


def take_outputs(source: ir.Model) -> list[ir.Value]:
    """The source graph's outputs, detached from it."""
    outputs = list(source.graph.outputs)
    source.graph.outputs.clear()
    return outputs


def const_i64(graph: ir.Graph, name: str, values: list[int]) -> ir.Value:
    """An int64 initializer of ``graph``."""
    value = ir.Value(name=name, const_value=ir.tensor(values, dtype=INT64, name=name))
    value.type = ir.TensorType(INT64)
    value.shape = ir.Shape([len(values)])
    graph.register_initializer(value)
    return value


def add_node(graph: ir.Graph, op: str, inputs, name: str, num_outputs: int = 1, module: str = "loop",
             **attrs) -> ir.Node:
    """Append ``op`` to ``graph``; its outputs are named after the node."""
    node = ir.Node("", op, inputs, attributes=[ir.convenience.convert_attribute(k, v) for k, v in attrs.items()],
                   num_outputs=num_outputs, name=name, metadata_props={MODULE_KEY: module})
    for i, out in enumerate(node.outputs):
        out.name = name if num_outputs == 1 else f"{name}_{i}"
    graph.append(node)
    return node


@dataclasses.dataclass
class PerStep:
    """A step input read from an outer time-major tensor: ``Gather(outer, t)``, then
    ``Unsqueeze`` on ``unsqueeze_axis`` if given (e.g. a previous sample [B] -> [B, 1])."""

    outer: ir.Value
    name: str
    unsqueeze_axis: int | None = None


def build_step_loop(main: ir.Graph, step: ir.Model, trip_count: ir.Value, *, per_step: dict[int, PerStep],
                    carried: list[tuple[int, int, ir.Value, str]], scanned: list[int],
                    prefix: str = "step", module: str = "step", scopes: dict[str, str] | None = None) -> ir.Node:
    """Append to ``main`` a Loop that runs ``step`` ``trip_count`` times.

    ``per_step``: step input index -> the outer tensor it is gathered from at step t.
    ``carried``: (step input index, step output index, initial value, body name) of each
    value the loop carries from one step to the next. ``scanned``: step output indices
    stacked over the steps. Every step input must be either per-step or carried. The
    Loop's outputs are the final carried values, then the scan outputs.
    """
    iteration = ir.Value(name="loop/t", type=ir.TensorType(INT64), shape=ir.Shape([]))
    cond_in = ir.Value(name="loop/cond_in", type=ir.TensorType(ir.DataType.BOOL), shape=ir.Shape([]))
    body = ir.Graph([iteration, cond_in], [], nodes=[], name="wavernn_step")
    step_outputs = take_outputs(step)
    step_inputs = adopt_graph(step, main, prefix, nodes_into=body, module=module, scopes=scopes)
    covered = set(per_step) | {i for i, _, _, _ in carried}
    if covered != set(range(len(step_inputs))):
        missing = [step_inputs[i].name for i in sorted(set(range(len(step_inputs))) - covered)]
        raise ValueError(f"step inputs neither per-step nor carried: {missing}")

    # The Gathers run before the step's nodes that read them.
    gathers = []
    for index, spec in per_step.items():
        node = add_node(body, "Gather", [spec.outer, iteration], spec.name, axis=0)
        gathers.append(node)
        value = node.outputs[0]
        if spec.unsqueeze_axis is not None:
            axis = const_i64(main, f"{spec.name}/axis", [spec.unsqueeze_axis])
            node = add_node(body, "Unsqueeze", [value, axis], f"{spec.name}/unsqueeze")
            gathers.append(node)
            value = node.outputs[0]
        step_inputs[index].replace_all_uses_with(value)
    for node in reversed(gathers):
        body.remove(node)
        if len(body):
            body.insert_before(body.node(0), node)
        else:
            body.append(node)
    cond_out = add_node(body, "Identity", [cond_in], "loop/cond_out").outputs[0]

    initial = []
    body.outputs.append(cond_out)
    for in_index, out_index, init, name in carried:
        value = step_inputs[in_index]
        value.name = name
        body.inputs.append(value)
        body.outputs.append(step_outputs[out_index])
        initial.append(init)
    body.outputs.extend(step_outputs[i] for i in scanned)

    loop = ir.Node("", "Loop", [trip_count, None, *initial], attributes=[ir.AttrGraph("body", body)],
                   num_outputs=len(body.outputs) - 1, name="loop", metadata_props={MODULE_KEY: "loop"})
    for i, out in enumerate(loop.outputs):
        out.name = f"loop/out{i}"
    main.append(loop)
    return loop
