"""The exported ONNX model against the PyTorch reference, in both modes and on odd sizes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from reference_check import assert_samples_match
from waveopt.demo_data import demo_mels, demo_prev_samples, uniform_noise
from waveopt.model_info import wavernn_info
from waveopt.models.modules import Conditioning
from waveopt.models.wavernn import fold_with_overlap
from waveopt.runtime import session

ALL = ["raw", "mol", "odd", "odd_mol"]


def run(proto, **feed):
    return session(proto).run(None, feed)


@pytest.mark.parametrize("name", ALL)
def test_teacher_forced_logits_match_reference(name, models, exports):
    model = models(name)
    proto = exports(name, teacher_forced=True)
    mels = demo_mels(3, batch=2, seed=3)
    prev = demo_prev_samples(3 * model.hop_length, batch=2, seed=3)
    (logits,) = run(proto, mels=mels, prev_samples=prev)
    expected = model.teacher_forced_logits(torch.from_numpy(mels), torch.from_numpy(prev)).numpy()
    assert logits.shape == expected.shape == (3 * model.hop_length, 2, model.n_classes)
    assert np.abs(logits - expected).max() <= 1e-4


@pytest.mark.parametrize("name", ALL)
def test_free_running_samples_match_reference_for_2000_steps(name, models, exports):
    model = models(name)
    frames = -(-2000 // model.hop_length) + 1
    mels = demo_mels(frames, batch=2, seed=4)
    noise = uniform_noise(frames * model.hop_length, 2, seed=4)
    wave, samples = run(exports(name), mels=mels, noise=noise)
    expected = model.generate_samples(torch.from_numpy(mels), torch.from_numpy(noise)).numpy()
    assert samples.shape[0] >= 2000
    agreed = assert_samples_match(model, mels, noise, expected, samples)
    if agreed == samples.shape[0]:  # no near-tie: the waveform follows the samples
        atol = 1e-5 if model.mode == "RAW" else 1e-4  # MOL samples agree within 1e-4
        np.testing.assert_allclose(wave, model.finish_waveform(expected.T, frames), atol=atol)


def test_waveform_is_fatchords_post_processing(models, exports):
    model = models("raw")
    mels = demo_mels(4, seed=5)
    noise = uniform_noise(4 * model.hop_length, 1, seed=5)
    wave, samples = run(exports("raw"), mels=mels, noise=noise)
    assert wave.shape == (1, 3 * model.hop_length)
    decoded = np.sign(samples[:, 0]) / 511 * (512 ** np.abs(samples[:, 0].astype(np.float64)) - 1)
    fade = np.linspace(1, 0, 20 * model.hop_length)[-wave.shape[1]:]
    np.testing.assert_allclose(wave[0], decoded[: wave.shape[1]] * fade, atol=1e-5)


@pytest.mark.parametrize("name", ["raw", "mol"])
def test_fold_generation_equals_reference(name, models, exports):
    model = models(name)
    fold = (600, 100)
    frames = 9  # 2475 samples -> 4 folds, the last one padded
    mels = demo_mels(frames, seed=6)
    proto = exports(name, fold=fold)
    info = wavernn_info(proto)
    steps, folds = info.loop_shape(frames, 1)
    assert (steps, folds) == (800, 4)
    noise = uniform_noise(steps, folds, seed=6)
    wave, samples = run(proto, mels=mels, noise=noise)
    expected = model.generate_samples(torch.from_numpy(mels), torch.from_numpy(noise), fold=fold).numpy()
    agreed = assert_samples_match(model, mels, noise, expected, samples, fold=fold)
    if agreed == samples.shape[0]:
        atol = 1e-5 if model.mode == "RAW" else 1e-4
        np.testing.assert_allclose(wave, model.finish_waveform(expected.T, frames, fold), atol=atol)


@pytest.mark.parametrize("total", [1100, 1375, 2475, 3300])
def test_in_graph_fold_is_fatchords_fold(total, models):
    model = models("raw")
    fold = (600, 100)
    x = torch.randn(1, total, 3)
    expected = fold_with_overlap(x, *fold)
    assert torch.equal(Conditioning(model, fold)._fold(x), expected)


def test_model_is_standard_onnx_and_checks(exports):
    proto = exports("raw")
    onnx.checker.check_model(proto, full_check=True)
    opsets = {o.domain: o.version for o in proto.opset_import}
    assert set(opsets) <= {"", "ai.onnx"} and opsets.get("", opsets.get("ai.onnx")) >= 17
    loops = [n for n in proto.graph.node if n.op_type == "Loop"]
    assert len(loops) == 1
    assert [i.name for i in proto.graph.input] == ["mels", "noise"]
    assert [o.name for o in proto.graph.output] == ["wave", "samples"]


def test_batch_and_length_are_dynamic(models, exports):
    model = models("raw")
    sess = session(exports("raw"))
    for batch, frames in [(1, 2), (3, 3)]:
        mels = demo_mels(frames, batch=batch, seed=7)
        wave, samples = sess.run(None, {"mels": mels, "noise": uniform_noise(frames * 275, batch, seed=7)})
        assert wave.shape == (batch, (frames - 1) * model.hop_length)
        assert samples.shape == (frames * model.hop_length, batch)


def test_exported_step_matches_reference(models):
    from waveopt.models import export_step

    model = models("odd")
    sess = session(export_step(model))
    rng = np.random.default_rng(0)
    feed = {"x": rng.uniform(-1, 1, (3, 1)), "m_t": rng.random((3, 80)), "aux_t": rng.standard_normal((3, 96)),
            "h1": rng.uniform(-1, 1, (3, 200)), "h2": rng.uniform(-1, 1, (3, 200)), "u": rng.random((3, 2))}
    feed = {k: v.astype(np.float32) for k, v in feed.items()}
    x_next, h1, h2, sample = sess.run(None, feed)
    t = {k: torch.from_numpy(v) for k, v in feed.items()}
    logits, eh1, eh2 = model.step_logits(t["x"], t["m_t"], *model.split_aux(t["aux_t"]), t["h1"], t["h2"])
    np.testing.assert_allclose(h1, eh1.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(h2, eh2.detach().numpy(), atol=1e-5)
    np.testing.assert_array_equal(x_next[:, 0], sample)
