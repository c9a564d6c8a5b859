"""Exact clean-up: onnxsim on the main graph, then folding, CSE and dead-code removal everywhere."""

from __future__ import annotations

import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common_passes
from onnxscript import optimizer

from waveopt.graph import iter_graphs, iter_nodes, iter_proto_graphs
from waveopt.passes.base import WaveoptPass

__all__ = ["SimplifyPass"]

_MAX_ROUNDS = 4


class SimplifyPass(WaveoptPass):
    """Remove work that does not change any output.

    Each round runs, until a round changes nothing:

    1. onnxsim on the main graph (it never enters Loop bodies). Input/output names and
       shapes, metadata_props and value_info are put back as they were; if onnxsim fails
       or rejects its own result, the round goes on without it and the summary says so.
    2. onnxscript constant folding, which enters Loop bodies.
    3. Common-subexpression elimination in every graph (onnx_ir's pass only visits the
       main graph, so each body is handed to it in turn).
    4. Dead-code removal (onnx_ir's pass recurses into bodies).

    Exact: every rewrite computes the same values; folded constants are evaluated once
    (elementwise arithmetic is bit-identical, transcendental ops may round differently
    in the last bit than onnxruntime would). Node names and shape annotations are not
    changes: a model that differs only in those is "not applicable" and left untouched.

    In place although onnxsim works on a ModelProto: the rounds run on a copy and, if it
    changed, its graph is moved into the given model, so the pass composes with the
    other in-place passes in one PassManager.
    """

    name = "simplify"
    description = "onnxsim, constant folding, CSE and dead-code removal (Loop bodies included)"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        original = _canonical(model)
        outside_before, inside_before = _node_counts(model)
        work, notes, fingerprint = model, [], original
        for _ in range(_MAX_ROUNDS):
            work, note = _round(work)
            if note and note not in notes:
                notes.append(note)
            new = _canonical(work)
            if new == fingerprint:
                break
            fingerprint = new
        if fingerprint == original:
            return self.result(model, note="; ".join(notes))
        _move_contents(work, model)
        outside_after, inside_after = _node_counts(model)
        changes = _describe(
            outside_before + inside_before, outside_after + inside_after,
            inside_before - inside_after,
        )
        return self.result(model, changes, note="; ".join(notes))


def _round(model: ir.Model) -> tuple[ir.Model, str]:
    """One round on a copy of ``model``; returns the copy and a note about onnxsim."""
    proto, note = _run_onnxsim(ir.serde.serialize_model(model))
    work = ir.serde.deserialize_model(proto)
    optimizer.fold_constants(work)
    cse = common_passes.CommonSubexpressionEliminationPass()
    for graph in list(iter_graphs(work.graph)):
        cse(ir.Model(graph, ir_version=work.ir_version))
    common_passes.RemoveUnusedNodesPass()(work)
    return work, note


def _run_onnxsim(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """onnxsim on the main graph with the model's interface and metadata kept."""
    import onnxsim  # imported here: it imports torch, which `import waveopt` should not pay for

    try:
        simplified, ok = onnxsim.simplify(proto, check_n=0, skip_shape_inference=False, certify=False)
    except Exception:  # onnxsim's optimizer asserts on some graphs (e.g. after hoisting)
        try:
            simplified, ok = onnxsim.simplify(proto, check_n=0, skip_shape_inference=False, certify=False,
                                              perform_optimization=False)
        except Exception as e:  # the rest of the pass still runs
            return proto, f"onnxsim failed and was skipped: {type(e).__name__}: {_first_line(e)}"
    if not ok:
        return proto, "onnxsim's result failed its own check and was skipped"
    if _names(simplified.graph.input) != _names(proto.graph.input) or _names(
        simplified.graph.output
    ) != _names(proto.graph.output):
        return proto, "onnxsim changed the model's inputs or outputs and was skipped"
    _restore(simplified.graph.input, proto.graph.input)
    _restore(simplified.graph.output, proto.graph.output)
    _restore(simplified.metadata_props, proto.metadata_props)
    produced = {out for node in simplified.graph.node for out in node.output}
    _restore(simplified.graph.value_info, [vi for vi in proto.graph.value_info if vi.name in produced])
    _restore_node_metadata(simplified.graph, _node_metadata(proto.graph))
    return simplified, ""


def _all_nodes(graph: onnx.GraphProto):
    for sub in iter_proto_graphs(graph):
        yield from sub.node


def _node_metadata(graph: onnx.GraphProto) -> dict[str, list]:
    """Node metadata_props (e.g. waveopt.module provenance) by output name."""
    return {out: list(node.metadata_props) for node in _all_nodes(graph) if node.metadata_props
            for out in node.output if out}


def _restore_node_metadata(graph: onnx.GraphProto, by_output: dict[str, list]) -> None:
    """onnxsim drops node metadata: give each node back the metadata of the node that
    produced the same output before."""
    for node in _all_nodes(graph):
        if node.metadata_props:
            continue
        source = next((by_output[o] for o in node.output if o in by_output), None)
        if source:
            node.metadata_props.extend(source)


def _names(value_infos) -> list[str]:
    return [vi.name for vi in value_infos]


def _restore(field, items) -> None:
    del field[:]
    field.extend(items)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


def _canonical(model: ir.Model) -> bytes:
    """Serialized bytes, ignoring node names and value_info (they change no output)."""
    proto = ir.serde.serialize_model(model)
    for graph in iter_proto_graphs(proto.graph):
        del graph.value_info[:]
        for node in graph.node:
            node.name = ""
    return proto.SerializeToString(deterministic=True)


def _node_counts(model: ir.Model) -> tuple[int, int]:
    """(nodes outside Loop bodies, nodes inside Loop bodies)."""
    inside = [in_loop for _, in_loop in iter_nodes(model.graph)]
    return len(inside) - sum(inside), sum(inside)


def _describe(before: int, after: int, removed_in_loops: int) -> str:
    if before == after:
        return f"rewrote the graph ({after} nodes, count unchanged)"
    if after > before:
        return f"rewrote the graph ({before} -> {after} nodes)"
    return f"removed {before - after} nodes ({removed_in_loops} in Loop bodies)"


def _move_contents(src: ir.Model, dst: ir.Model) -> None:
    """Make ``dst`` hold ``src``'s graph, functions and model fields."""
    dst.graph = src.graph
    dst.functions.clear()
    dst.functions.update(src.functions)
    for field in ("ir_version", "producer_name", "producer_version", "domain",
                  "model_version", "doc_string"):
        setattr(dst, field, getattr(src, field))
    dst.metadata_props.clear()
    dst.metadata_props.update(src.metadata_props)
