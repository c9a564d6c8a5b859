"""The pass pipeline on our own WaveRNN export: exact and idempotent."""

from __future__ import annotations

import onnx

import waveopt
from waveopt.model_info import example_inputs


def test_pipeline_is_exact_and_idempotent(exports):
    original = exports("raw")
    once = waveopt.optimize(original)
    twice = waveopt.optimize(once.model)
    assert not twice.modified
    assert all(r.summary.startswith("not applicable") for r in twice.reports)
    assert twice.model.SerializeToString() == once.model.SerializeToString()
    onnx.checker.check_model(once.model, full_check=True)
    inputs = example_inputs(original, frames=8, seed=3)
    result = waveopt.compare_models(original, once.model, inputs)
    assert result.ok, result.summary()


def test_pipeline_check_each_on_teacher_forced_export(exports):
    original = exports("mol", teacher_forced=True)
    result = waveopt.optimize(original, check_each=True, check_inputs=example_inputs(original, frames=3))
    from waveopt.passes import PRESETS

    assert [r.name for r in result.reports] == PRESETS["portable"]
    assert any(r.modified for r in result.reports[1:])
    assert {o.name for o in result.model.graph.output} == {"logits"}


def test_simplify_keeps_module_provenance(exports):
    """onnxsim drops node metadata; the pass gives it back (profiles attribute by it)."""
    def tagged(model):
        def nodes(graph):
            for node in graph.node:
                yield node
                for attr in node.attribute:
                    if attr.HasField("g"):
                        yield from nodes(attr.g)
        all_nodes = list(nodes(model.graph))
        return sum(any(p.key == "waveopt.module" for p in n.metadata_props) for n in all_nodes), len(all_nodes)

    original = exports("raw")
    kept, total = tagged(waveopt.optimize(original, passes=["simplify"]).model)
    assert kept == total and tagged(original)[0] == tagged(original)[1]
