"""waveopt.loop.from_step: a one-step cell + conditioning + sampler -> the whole-generation model.

References: the PyTorch WaveRNN's own teacher-forced logits and generation, and the
samplers of ``foreign_wavernns`` written in PyTorch.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from cli_helpers import assert_one_line_error, cli
from foreign_wavernns import export_conditioning, export_step, make_vocoder, reference_samples, step_noise

from waveopt.errors import WaveoptError
from waveopt.loop import SAMPLERS, from_step
from waveopt.models import export_step as export_our_step
from waveopt.runtime import session


@pytest.fixture(scope="module")
def coqui():
    vocoder = make_vocoder("coqui", "raw")
    return vocoder, export_step(vocoder, "torchscript"), export_conditioning(vocoder)


def test_our_step_without_a_conditioning_model_matches_pytorch(models):
    """Our exporter's teacher-forced step (x, m_t, aux_t, h1, h2) -> (logits, h1', h2'),
    with m and aux as batch-major model inputs, against WaveRNN.teacher_forced_logits."""
    model = models("raw")
    loop = from_step(export_our_step(model, teacher_forced=True), teacher_forced=True, conditioning_layout="btc")
    assert [i.name for i in loop.graph.input] == ["m_t", "aux_t", "prev_samples"]
    rng = np.random.default_rng(0)
    mels = torch.from_numpy(rng.uniform(0, 1, (2, model.hp.feat_dims, 3)).astype(np.float32))
    with torch.no_grad():
        m, aux = model.condition(mels)
    prev = rng.uniform(-1, 1, (m.shape[1], 2)).astype(np.float32)
    with torch.no_grad():
        expected = model.teacher_forced_logits(mels, torch.from_numpy(prev)).numpy()
    names = [i.name for i in loop.graph.input]
    got = session(loop).run(["logits"], dict(zip(names, [m.numpy(), aux.numpy(), prev])))[0]
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-4


@pytest.mark.parametrize("sampler", [s for s in SAMPLERS if s.startswith("raw")])
def test_free_running_model_has_our_conventions(sampler, coqui):
    vocoder, step, cond = coqui
    before = step.SerializeToString()
    model = from_step(step, cond, sampler, conditioning_layout="btc")
    assert step.SerializeToString() == before  # the caller's model is not modified
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["waveopt.sampled_outputs"] == "samples" and meta["waveopt.mode"] == "raw"
    assert [o.name for o in model.graph.output] == ["samples"]
    rng = np.random.default_rng(1)
    mels = rng.uniform(0, 1, (2, vocoder.feat, 3)).astype(np.float32)
    steps = 3 * vocoder.hop
    feed = {"mels": mels}
    if sampler == "raw-icdf":
        feed["noise"] = step_noise(steps, 2, 2, seed=2)
        assert meta["waveopt.noise_input"] == "noise"
        expected = reference_samples(vocoder, mels, feed["noise"])
    else:
        assert [i.name for i in model.graph.input] == ["mels"]
        expected = None
    got = session(model).run(["samples"], feed)[0]
    assert got.shape[1] == 2 and 0 < got.shape[0] <= steps  # the conditioning's length (no padding)
    if expected is not None:
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-4  # same float32 ops in the same order
    else:
        levels = 2 * np.arange(vocoder.classes) / (vocoder.classes - 1) - 1  # every sample is a class value
        assert np.abs(got[..., None] - levels).min(-1).max() <= 1e-6


@pytest.mark.parametrize("kwargs, message", [
    (dict(sampler="multinomial"), "unknown sampler"),
    (dict(sampler="mol-icdf"), "MOL sampler needs logits of 30"),
    (dict(conditioning_layout="ctb"), "unknown conditioning layout"),
    (dict(noise_width=3, noise_index=3), "noise index 3"),
])
def test_bad_arguments_are_one_line_errors(kwargs, message, coqui):
    _, step, cond = coqui
    with pytest.raises(WaveoptError, match=message):
        from_step(step, cond, **kwargs)


def test_conditioning_that_does_not_fit_the_step(coqui):
    _, step, cond = coqui
    extra = onnx.ModelProto()
    extra.CopyFrom(cond)
    del extra.graph.output[-1]
    with pytest.raises(WaveoptError, match="4 outputs, the step 5 conditioning inputs"):
        from_step(step, extra)


def test_a_step_without_a_batch_dim_is_refused(coqui):
    _, step, cond = coqui
    fixed = onnx.ModelProto()
    fixed.CopyFrom(step)
    for value in fixed.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_value = 3
    with pytest.raises(WaveoptError, match="no symbolic \\(batch\\) dimension"):
        from_step(fixed, cond)


# --- the CLI form -------------------------------------------------------------------------------
def test_cli_writes_the_loop_model(tmp_path, capsys, coqui):
    vocoder, step, cond = coqui
    onnx.save(step, tmp_path / "step.onnx")
    onnx.save(cond, tmp_path / "cond.onnx")
    out = tmp_path / "model.onnx"
    code, stdout, err = cli(capsys, "loop", tmp_path / "step.onnx", "--conditioning", tmp_path / "cond.onnx",
                            "--sampler", "raw-icdf", "--noise-width", "0", "-o", out)
    assert code == 0, err
    assert f"wrote {out}" in stdout
    model = onnx.load(out)
    rng = np.random.default_rng(3)
    mels = rng.uniform(0, 1, (1, vocoder.feat, 3)).astype(np.float32)
    noise = step_noise(3 * vocoder.hop, 1, 0, seed=4)
    got = session(model).run(["samples"], {"mels": mels, "noise": noise})[0]
    expected = reference_samples(vocoder, mels, noise)
    assert got.shape == expected.shape and np.abs(got - expected).max() <= 1e-4
    code, _, err = cli(capsys, "loop", tmp_path / "step.onnx", "--conditioning", tmp_path / "cond.onnx", "-o", out)
    assert_one_line_error(code, err, "exists")


@pytest.mark.parametrize("args, needle", [
    (["missing.onnx"], "no such file"),
    (["step.onnx", "--sampler", "gumbel"], "unknown sampler"),
    (["not_onnx.onnx"], "cannot read the step model"),
])
def test_cli_bad_input_is_one_line(args, needle, tmp_path, capsys, coqui):
    _, step, _ = coqui
    onnx.save(step, tmp_path / "step.onnx")
    (tmp_path / "not_onnx.onnx").write_text("hello")
    code, _, err = cli(capsys, "loop", *[tmp_path / a if a.endswith(".onnx") else a for a in args],
                       "-o", tmp_path / "out.onnx")
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "out.onnx").exists()
