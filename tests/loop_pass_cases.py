"""The models the loop-pass tests run on, the passes in their order, and the checks they share (the passes' order is ``waveopt.passes.LOOP_PASSES``).

A case is (source, form): our exporter's small models (``raw``, ``mol``, ``odd``,
``odd_mol``, free-running, teacher-forced or folded) or the TorchScript-step Loop of
``foreign_graphs`` (``ts``). Optimized models are cached per (case, passes) for the session.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import onnx_ir as ir

import waveopt
from foreign_graphs import torchscript_loop_inputs, torchscript_loop_model
from model_fixtures import get_export
from waveopt.graph import to_ir
from waveopt.model_info import example_inputs, wavernn_info
from waveopt.passes import LOOP_PASSES  # noqa: F401  (the order the tests follow, as registered)


# (source, form): form is "free", "tf" (teacher-forced) or "fold" (free-running, folded).
CASES = [("raw", "free"), ("raw", "tf"), ("mol", "free"), ("mol", "tf"), ("odd", "free"), ("odd_mol", "tf"),
         ("raw", "fold"), ("ts", "free"), ("ts", "tf")]
CASE_IDS = [f"{s}-{f}" for s, f in CASES]
FOLD = (600, 100)


@functools.cache
def original(source: str, form: str) -> onnx.ModelProto:
    if source == "ts":
        return torchscript_loop_model(teacher_forced=form == "tf")
    return get_export(source, teacher_forced=form == "tf", fold=FOLD if form == "fold" else None)


@functools.cache
def optimized(source: str, form: str, passes: tuple[str, ...]) -> waveopt.OptimizeResult:
    return waveopt.optimize(original(source, form), passes=list(passes))


def upto(name: str) -> tuple[str, ...]:
    """LOOP_PASSES up to and including the first ``name``."""
    return tuple(LOOP_PASSES[: LOOP_PASSES.index(name) + 1])


@functools.cache
def inputs(source: str, form: str) -> dict[str, np.ndarray]:
    """>= 2000 steps free-running (800 per fold folded), fewer teacher-forced."""
    model = original(source, form)
    if source == "ts":
        return torchscript_loop_inputs(model, steps=2000 if form == "free" else 300, batch=2, seed=5)
    hop = wavernn_info(model).hop_length
    frames = 9 if form == "fold" else -(-(2000 if form == "free" else 300) // hop) + 1
    return example_inputs(model, frames=frames, batch=2, seed=5)


# compare_models tests a near-tie by nudging the uniform by exactly +-tie_eps; when classes
# narrower than that lie next to the boundary, the nudge jumps past the candidate's class
# (seen on the odd model: u 7e-7 from a boundary, +1e-6 reproduces the candidate, +1e-5 does
# not). So a mismatch also counts as a near-tie when a smaller nudge reproduces it.
TIE_EPS = (1e-5, 3e-6, 1e-6, 3e-7)


def assert_exact(source: str, form: str, candidate) -> None:
    """Teacher-forced: outputs within 1e-4 of the unoptimized graph in ORT; free-running:
    samples identical (MOL: within 1e-4) up to the end or to a first mismatch that is a
    near-tie (a nudge of the uniform by at most 1e-5 makes the reference draw it)."""
    for eps in TIE_EPS:
        result = waveopt.compare_models(original(source, form), candidate, inputs(source, form), tie_eps=eps)
        if result.ok or "noise nudge" not in result.summary():
            break
    assert result.ok, result.summary()


def loop_body(model) -> ir.Graph:
    graph = to_ir(model).graph
    (loop,) = [n for n in graph if n.op_type == "Loop"]
    return loop.attributes["body"].as_graph()


def reads_state(value: ir.Value, body: ir.Graph) -> bool:
    """Does ``value`` depend on the loop-carried state (body inputs after t and cond)?"""
    state = set(body.inputs[2:])
    seen, todo = set(), [value]
    while todo:
        v = todo.pop()
        if v is None or v in seen:
            continue
        seen.add(v)
        if v in state:
            return True
        node = v.producer()
        if node is not None and node.graph is body:
            todo.extend(node.inputs)
    return False


def body_ops(model) -> dict[str, int]:
    return waveopt.graph_stats(model).ops_in_loop_body


def expected_macs(source: str, form: str, stage: str) -> int:
    """Per-step MACs from the layer sizes alone: ``"export"`` as exported (fatchord's per-step
    layers) or ``"final"`` (only W_hh1·h1, W_ih2·h1, W_hh2·h2, fc1·(h1+h2), fc2, fc3 remain)."""
    if source == "ts":
        feat, aux, rnn, fc, classes = 12, 5, 40, 24, 64
    else:
        hp = get_model_hparams(source)
        feat, aux, rnn, fc, classes = hp.feat_dims, hp.aux_dims, hp.rnn_dims, hp.fc_dims, hp.n_classes
    final = 3 * (rnn * 3 * rnn) + rnn * fc + fc * fc + fc * classes
    if stage == "final":
        return final
    return final + (1 + feat + aux) * rnn + rnn * 3 * rnn + aux * 3 * rnn + aux * fc + aux * fc


def get_model_hparams(source: str):
    from model_fixtures import CONFIGS

    return CONFIGS[source]


def serialized(model) -> bytes:
    return ir.serde.serialize_model(model).SerializeToString() if isinstance(model, ir.Model) \
        else model.SerializeToString()
