"""The teacher-forced twin of a free-running model gives the teacher-forced export's logits.

Reference: the model exported by PyTorch with ``teacher_forced=True`` (an independent
path: the exporter builds that loop from TeacherForcedStep), on the same mels and samples.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx_builders import cnn_model

from waveopt.check import cpu_session
from waveopt.errors import WaveoptError
from waveopt.model_info import example_inputs
from waveopt.pipeline import optimize
from waveopt.quant.teacher_forcing import teacher_forced_variant


def _run_twin(twin, feed):
    sess = cpu_session(twin)
    names = {i.name for i in sess.get_inputs()}
    return sess.run(None, {k: v for k, v in feed.items() if k in names})[0]


@pytest.mark.parametrize("name", ["raw", "mol", "odd"])
@pytest.mark.parametrize("preset", [None, "portable", "native"])
def test_twin_matches_teacher_forced_export(exports, name, preset):
    free, tf = exports(name), exports(name, teacher_forced=True)
    inputs = example_inputs(tf, frames=3)
    expected = cpu_session(tf).run(None, inputs)[0]
    model = free if preset is None else optimize(free, preset=preset).model
    twin = teacher_forced_variant(model)
    feed = {**inputs, "noise": example_inputs(free, frames=3)["noise"]}
    got = _run_twin(twin, feed)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert twin.graph.output[0].name == "logits"
    assert {p.key: p.value for p in twin.metadata_props}["waveopt.form"] == "teacher_forced"


def test_twin_of_a_folded_export(exports):
    free, tf = exports("raw", fold=(20, 5)), exports("raw", teacher_forced=True, fold=(20, 5))
    inputs = example_inputs(tf, frames=3)
    expected = cpu_session(tf).run(None, inputs)[0]
    got = _run_twin(teacher_forced_variant(free), {**inputs, "noise": example_inputs(free, frames=3)["noise"]})
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_twin_refuses_what_has_no_free_running_loop(exports):
    with pytest.raises(WaveoptError, match="already teacher-forced"):
        teacher_forced_variant(exports("raw", teacher_forced=True))
    with pytest.raises(WaveoptError, match="no WaveRNN loop"):
        teacher_forced_variant(cnn_model())
