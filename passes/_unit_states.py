"""Carry a Loop state without the unit axis every step adds and removes (``nn.GRU``'s [1, B, H]).

before::

    Loop(h0 [1, B, H]) body: h [1, B, H] ─ Squeeze(h, 0) | Gather(h, 0) | Squeeze(Slice(h, 0:1, axis 0))
                                             ─ ... ─> h' [B, H] ─ Unsqueeze(h', 0) ─> carried out
after::

    Loop(Squeeze(h0, 0) [B, H]) body: h [B, H] ─ ... ─> h' ─> carried out
    (the final state, if used, is Unsqueeze(out, 0) after the Loop)

A state is narrowed only when every use in the body drops the unit axis and the value
carried out is an Unsqueeze on that axis, so the loop computes exactly the same values.
"""

from __future__ import annotations

import onnx_ir as ir

from waveopt.passes._ir import Builder, const_array, int_list, is_default_domain, remove_dead

__all__ = ["narrow_unit_states"]


def narrow_unit_states(loop: ir.Node, builder: Builder) -> int:
    """Narrow every unit-axis state of ``loop`` (in place); returns how many."""
    body: ir.Graph = loop.attributes["body"].value
    n_carried = len(body.inputs) - 2
    narrowed = 0
    for i in range(n_carried):
        state, out = body.inputs[2 + i], body.outputs[1 + i]
        axis = _unit_axis(state, out)
        if axis is None:
            continue
        readers = _readers(state, axis)
        if readers is None:
            continue
        rank = len(state.shape)
        dims = [d for k, d in enumerate(state.shape) if k != axis]
        new_state = ir.Value(name=builder.fresh(f"{state.name}_narrow"), type=state.type, shape=ir.Shape(dims))
        body.inputs[2 + i] = new_state
        dead = []
        for reader in readers:
            reader.outputs[0].replace_all_uses_with(new_state)
            dead.append(reader.outputs[0])
        source = out.producer().inputs[0]
        if source.is_graph_output() or source.is_graph_input() or source.is_initializer():
            ident = builder.node("Identity", [source], hint=f"{state.name}_next",
                                 metadata=out.producer().metadata_props)
            body.append(ident)
            source = ident.outputs[0]
        body.outputs[1 + i] = source
        dead.append(out)

        outer = builder.at(loop, metadata=loop.metadata_props)
        initial = loop.inputs[2 + i]
        loop.replace_input_with(2 + i, outer.one("Squeeze", [initial, outer.ints([axis])], "state_init"))
        final = loop.outputs[i]
        if final.uses() or final.is_graph_output():
            after = builder.at(loop, after=True, metadata=loop.metadata_props)
            restored = after.one("Unsqueeze", [final, after.ints([axis])], "state_final")
            for user, index in list(final.uses()):
                if user is not restored.producer():
                    user.replace_input_with(index, restored)
            if final.is_graph_output():
                graph = loop.graph
                graph.outputs[graph.outputs.index(final)] = restored
                restored.name, final.name = final.name, builder.fresh(f"{final.name}_narrow")
        final.shape = ir.Shape(dims) if final.shape is not None and len(final.shape) == rank else None
        remove_dead(dead)
        narrowed += 1
    return narrowed


def _unit_axis(state: ir.Value, out: ir.Value) -> int | None:
    """The axis that ``out`` = Unsqueeze(·, [axis]) adds and ``state`` has with size 1."""
    node = out.producer()
    if node is None or node.op_type != "Unsqueeze" or not is_default_domain(node) or state.shape is None:
        return None
    rank = len(state.shape)
    axes = int_list(node.inputs[1])
    if axes is None or len(axes) != 1 or state.shape[axes[0] % rank] != 1:
        return None
    return axes[0] % rank


def _readers(state: ir.Value, axis: int) -> list[ir.Node] | None:
    """The nodes that drop the unit axis of ``state`` (through a unit Slice), or None if
    some use does anything else."""
    readers = []
    for user, index in state.uses():
        if index != 0 or not is_default_domain(user):
            return None
        if user.op_type == "Slice" and _is_unit_slice(user, axis):
            inner = _readers(user.outputs[0], axis)
            if inner is None or user.outputs[0].is_graph_output():
                return None
            readers.extend(inner)
        elif _drops(user, axis) and not user.outputs[0].is_graph_output():
            readers.append(user)
        else:
            return None
    return readers


def _drops(node: ir.Node, axis: int) -> bool:
    if node.op_type == "Squeeze":
        return int_list(node.inputs[1] if len(node.inputs) > 1 else None) == [axis]
    if node.op_type == "Gather":
        index = const_array(node.inputs[1])
        return (node.attributes.get_int("axis", 0) == axis and index is not None and index.ndim == 0
                and int(index) in (0, -1))
    return False


def _is_unit_slice(node: ir.Node, axis: int) -> bool:
    """Slice(x, [0], [1 or more], [axis]) on a size-1 axis: the identity."""
    inputs = list(node.inputs) + [None] * (5 - len(node.inputs))
    starts, ends = int_list(inputs[1]), int_list(inputs[2])
    axes = int_list(inputs[3]) if inputs[3] is not None else [0]
    steps = int_list(inputs[4]) if inputs[4] is not None else [1]
    return starts == [0] and ends is not None and len(ends) == 1 and ends[0] >= 1 and axes == [axis] \
        and steps == [1]
