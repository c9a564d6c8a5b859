import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from onnx_builders import ar_loop_model, cnn_model

from waveopt.check import CheckFailed, check_sampled, compare_models, cpu_session, random_inputs
from waveopt.errors import WaveoptError


def _run(model, inputs):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, inputs)))


@pytest.fixture(scope="module")
def near_tie():
    """Inputs that put noise[k, b, 0] exactly on a CDF boundary of the reference, where a
    candidate whose logits differ by 1e-7 has its CDF one ulp lower: the two draw
    neighbouring classes at step k, and nowhere earlier."""
    reference, candidate = ar_loop_model(), ar_loop_model(logit_delta=1e-7)
    inputs = random_inputs(reference, seed=1, dims={"T": 24, "B": 2})
    ref = _run(ar_loop_model(debug_cdf=True), inputs)["cdf"]
    cand = _run(ar_loop_model(logit_delta=1e-7, debug_cdf=True), inputs)["cdf"]
    k, b, i = next(
        (k, b, i) for k, b, i in np.argwhere(cand < ref) if k >= 5 and i < ref.shape[2] - 1
    )
    inputs["noise"][k, b, 0] = ref[k, b, i]
    ref_samples = _run(reference, inputs)["samples"]
    cand_samples = _run(candidate, inputs)["samples"]
    assert np.array_equal(ref_samples[:k], cand_samples[:k])
    assert ref_samples[k, b] != cand_samples[k, b]
    return reference, candidate, inputs, int(k)


def test_identical_models_pass():
    model = ar_loop_model()
    result = compare_models(model, ar_loop_model(), random_inputs(model, dims={"T": 16, "B": 2}))
    assert result.ok
    samples = result.outputs[0]
    assert samples.name == "samples" and samples.note == "equal within atol for all 16 steps"
    assert samples.max_abs_diff == 0.0
    result.raise_if_failed()


def test_near_tie_passes(near_tie):
    reference, candidate, inputs, k = near_tie
    result = compare_models(reference, candidate, inputs)  # sampled/noise from metadata
    assert result.ok, result.summary()
    samples, h_last = result.outputs
    assert f"for {k} of 24 steps, then a near-tie at step {k}" in samples.note
    assert h_last.ok  # either still within tolerance or rightly not compared
    if not h_last.compared:
        assert f"diverged after the near-tie at step {k}" in h_last.note
    assert "near-tie" in result.summary()


def test_near_tie_needs_the_nudge(near_tie):
    reference, candidate, inputs, k = near_tie
    result = compare_models(reference, candidate, inputs, tie_eps=1e-12)  # rounds to no nudge
    assert not result.ok
    assert f"differs at step {k}" in result.outputs[0].note
    assert "does not reproduce it" in result.outputs[0].note


def _step_sampler(boundary: float):
    """A reference whose draw at step 3 jumps from class 10 to class 20 at u = ``boundary``:
    classes 11..19 have near-zero probability, narrower than any nudge."""
    def rerun(noise):
        samples = np.zeros(noise.shape[:2], np.float32)
        samples[3, 0] = 10.0 if noise[3, 0, 0] <= boundary else 20.0
        return {"samples": samples}
    return rerun


@pytest.mark.parametrize("candidate, boundary, near", [
    (14.0, 0.5 + 5e-7, True),    # between the draws at u -+ 1e-5: a near-tie no nudge reproduces
    (25.0, 0.5 + 5e-7, False),   # outside them
    (14.0, 0.5 + 1e-3, False),   # the reference does not move within 1e-5: no tie at all
])
def test_a_draw_between_the_nudged_draws_is_a_near_tie(candidate, boundary, near):
    noise = np.full((6, 1, 2), 0.3, np.float32)
    noise[3, 0, 0] = 0.5
    rerun = _step_sampler(boundary)
    ref = rerun(noise)["samples"]
    cand = ref.copy()
    cand[3, 0] = candidate
    record, step = check_sampled("samples", ref, cand, 1e-4, noise, 1e-5, rerun)
    assert record.ok is near and (step == 3) is near, record.note


def test_without_sampled_outputs_a_near_tie_is_a_mismatch(near_tie):
    reference, candidate, inputs, _ = near_tie
    result = compare_models(reference, candidate, inputs, sampled_outputs=[])
    assert not result.ok
    assert not result.outputs[0].ok and result.outputs[0].max_abs_diff > 0.1


def test_real_error_fails():
    reference, candidate = ar_loop_model(), ar_loop_model(logit_delta=0.5)
    inputs = random_inputs(reference, seed=2, dims={"T": 24, "B": 2})
    result = compare_models(reference, candidate, inputs)
    assert not result.ok
    assert "does not reproduce it" in result.outputs[0].note
    with pytest.raises(CheckFailed, match="^after pass x: outputs differ") as info:
        result.raise_if_failed("after pass x")
    assert isinstance(info.value, WaveoptError)


def test_plain_outputs_use_atol_and_rtol():
    model = cnn_model()
    inputs = random_inputs(model, dims={"N": 2})
    nudged, broken = cnn_model(), cnn_model()
    for m, scale in ((nudged, 1 + 1e-6), (broken, 1.05)):
        w = numpy_helper.to_array(m.graph.initializer[0]) * np.float32(scale)
        m.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, "w1"))
    assert compare_models(model, nudged, inputs).ok
    result = compare_models(model, broken, inputs)
    assert not result.ok
    out = result.outputs[0]
    assert out.name == "out" and out.max_abs_diff > 1e-3 and "MISMATCH" in result.summary()
    assert compare_models(model, broken, inputs, atol=10.0).ok


def test_a_candidate_that_cannot_run_fails():
    model = cnn_model()
    broken = cnn_model()
    del broken.graph.initializer[2]  # w2 gone
    result = compare_models(model, broken, random_inputs(model))
    assert not result.ok
    assert "the candidate failed to run" in result.summary()


def test_session_factory_is_used():
    calls = []

    def factory(proto: onnx.ModelProto):
        calls.append(proto.graph.name)
        return cpu_session(proto)

    model = cnn_model()
    assert compare_models(model, model, random_inputs(model), session_factory=factory).ok
    assert calls == ["cnn", "cnn"]


def test_unknown_sampled_output_is_a_user_error():
    model = cnn_model()
    with pytest.raises(WaveoptError, match="sampled output 'samples' is not an output"):
        compare_models(model, model, random_inputs(model), sampled_outputs=["samples"])


def test_random_inputs_are_seeded_and_shaped():
    model = ar_loop_model(features=3)
    a = random_inputs(model, seed=3, dims={"T": 7})
    b = random_inputs(model, seed=3, dims={"T": 7})
    c = random_inputs(model, seed=4, dims={"T": 7})
    assert a.keys() == {"x", "noise"}
    assert a["x"].shape == (7, 1, 3) and a["x"].dtype == np.float32
    assert a["noise"].shape == (7, 1, 2)
    np.testing.assert_array_equal(a["x"], b["x"])
    assert not np.array_equal(a["x"], c["x"])
    assert a["noise"].min() >= 1e-5 and a["noise"].max() <= 1 - 1e-5
    assert a["x"].min() < 0  # normal, not the noise's uniform


def test_random_inputs_reject_unresolvable_dims():
    model = cnn_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].Clear()
    with pytest.raises(WaveoptError, match="input 'img' has a dim of unknown size"):
        random_inputs(model)
    model.graph.input[0].type.tensor_type.ClearField("shape")
    with pytest.raises(WaveoptError, match="input 'img' has no shape"):
        random_inputs(model)
