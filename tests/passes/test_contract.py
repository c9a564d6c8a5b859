"""The contract every registered pass keeps, checked once for all of them (parametrized
over ``waveopt.passes.PASSES``; a new pass is covered by registering it):

- not applicable on a CNN (no Loop, no GRU): the model is left byte for byte, and the
  report says "not applicable";
- exact on the teacher-forced export: its logits match the unoptimized graph in ORT
  (quantize is approximate by design; tests/test_quantize_guard.py measures it);
- idempotent: a second run changes nothing and says "not applicable";
- its report is one line: "not applicable..." exactly when nothing changed.
"""

from __future__ import annotations

import onnx_ir as ir
import pytest
from onnx_builders import cnn_model

import waveopt
from loop_pass_cases import serialized
from model_fixtures import get_export
from waveopt.model_info import example_inputs
from waveopt.passes import PASSES

APPROXIMATE = {"quantize"}  # by design: its accuracy is measured by the quantization guard


def _run(name: str, model: ir.Model):
    p = PASSES[name]()
    result = p(model)
    assert "\n" not in p.summary and p.summary, f"{name}: report {p.summary!r}"
    assert result.modified == (not p.summary.startswith("not applicable")), f"{name}: {p.summary!r}"
    return result.model, p


@pytest.mark.parametrize("name", sorted(PASSES))
def test_not_applicable_on_a_cnn(name):
    model = ir.serde.deserialize_model(cnn_model())
    before = serialized(model)
    _, p = _run(name, model)
    assert not p.modified
    assert serialized(model) == before


@pytest.mark.parametrize("name", sorted(PASSES))
def test_exact_on_the_teacher_forced_export_and_idempotent(name):
    original = get_export("raw", teacher_forced=True)
    once, _ = _run(name, ir.serde.deserialize_model(original))
    if name not in APPROXIMATE:
        inputs = example_inputs(original, frames=3, batch=2, seed=5)
        outcome = waveopt.compare_models(original, ir.serde.serialize_model(once), inputs)
        assert outcome.ok, f"{name}: {outcome.summary()}"
    before = serialized(once)
    _, again = _run(name, once)
    assert not again.modified, f"{name} changed its own output: {again.summary}"
    assert serialized(once) == before
