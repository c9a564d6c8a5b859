"""Other implementations' WaveRNNs (torchaudio-like nn.GRU steps, coqui-like GRUCell steps),
exported by both torch exporters and wrapped with ``waveopt.loop.from_step``: the default
preset is exact and cuts the per-step MACs, ``--target native`` lowers to one WaveRNNLoop.

References: the PyTorch modules of ``foreign_wavernns`` (logits, samples), the step's
MACs counted from the architecture, and the unoptimized graph in ORT.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from foreign_wavernns import (
    export_conditioning, export_step, make_vocoder, reference_logits, reference_samples, step_macs, step_noise,
)
from native_emulation import run_lowered

import waveopt
import waveopt.passes
from waveopt.graph import iter_nodes, to_ir
from waveopt.loop import from_step
from waveopt.report import graph_stats
from waveopt.runtime import session

CASES = [("torchaudio", "raw"), ("coqui", "raw"), ("coqui", "mol")]
EXPORTERS = ["dynamo", "torchscript"]
SAMPLER = {"raw": "raw-icdf", "mol": "mol-icdf"}


@pytest.fixture(scope="session")
def foreign():
    """(kind, mode, exporter) -> (vocoder, step, conditioning), exported once per session."""
    cache: dict = {}

    def get(kind, mode, exporter):
        key = (kind, mode, exporter)
        if key not in cache:
            vocoder = make_vocoder(kind, mode)
            cache[key] = vocoder, export_step(vocoder, exporter), export_conditioning(vocoder)
        return cache[key]

    return get


def _feed(vocoder, frames=3, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    mels = rng.uniform(0, 1, (batch, vocoder.feat, frames)).astype(np.float32)
    return mels, frames * vocoder.hop


def _all_ops(model) -> list[str]:
    """Op types of every node, Loop bodies included."""
    return [n.op_type for n, _ in iter_nodes(to_ir(model).graph)]


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("kind, mode", CASES)
def test_default_preset_is_exact_and_cuts_macs(kind, mode, exporter, foreign):
    vocoder, step, cond = foreign(kind, mode, exporter)
    model = from_step(step, cond, SAMPLER[mode], teacher_forced=True, conditioning_layout=vocoder.layout)
    result = waveopt.optimize(model)
    assert result.reports[0].name == "lower_gru"
    if vocoder.kind == "torchaudio":
        assert "lowered 2 GRU" in result.reports[0].summary, result.reports[0].summary
    mels, steps = _feed(vocoder)
    prev = np.random.default_rng(1).uniform(-1, 1, (steps, 2)).astype(np.float32)
    expected = reference_logits(vocoder, mels, prev)
    got = session(result.model).run(["logits"], {"mels": mels, "prev_samples": prev})[0]
    assert got.shape == expected.shape
    assert np.all(np.abs(got - expected) <= 1e-4 + 1e-5 * np.abs(expected))
    before = step_macs(vocoder)
    after = graph_stats(result.model).macs_per_step
    assert after <= 0.78 * before, (before, after)
    assert "GRU" not in _all_ops(result.model)


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("kind, mode", CASES)
def test_native_lowers_to_one_op_with_the_same_samples(kind, mode, exporter, foreign):
    vocoder, step, cond = foreign(kind, mode, exporter)
    model = from_step(step, cond, SAMPLER[mode], conditioning_layout=vocoder.layout)
    result = waveopt.optimize(model, preset="native")
    ops = [n.op_type for n in result.model.graph.node]
    assert "Loop" not in ops and ops.count("WaveRNNLoop") == 1, [r.summary for r in result.reports]
    mels, steps = _feed(vocoder, frames=4, seed=3)
    noise = step_noise(steps, 2, 2, seed=4)
    feed = {"mels": mels, "noise": noise}
    expected = reference_samples(vocoder, mels, noise)
    unoptimized = session(model).run(["samples"], feed)[0]
    _assert_same_or_near_tie(unoptimized, expected, vocoder, mels, noise)
    got = run_lowered(result.model, feed)["samples"]
    _assert_same_or_near_tie(got, expected, vocoder, mels, noise)


def _assert_same_or_near_tie(got, expected, vocoder, mels, noise, index=0):
    """Samples agree, or the first disagreement is at a uniform within 1e-5 of a CDF
    boundary of the reference's distribution (computed teacher-forced on its history)."""
    bad = np.abs(got - expected) > 1e-4
    if not bad.any():
        return
    t, b = np.argwhere(bad)[0]
    prev = np.concatenate([np.zeros_like(expected[:1]), expected[:-1]])
    logits = reference_logits(vocoder, mels, prev)[t, b]
    if vocoder.mode == "mol":
        logits = logits[:10]
    e = np.exp(logits - logits.max())
    cdf = np.cumsum(e / e.sum())
    u = noise[t, b, index] if noise.ndim == 3 else noise[t, b]
    assert np.abs(cdf - u).min() <= 1e-5, f"samples differ at step {t}, batch {b}, not at a near-tie"


# --- samplers: where the uniform sits, and samplers the fused op does not have ---------------
@pytest.mark.parametrize("width, index", [(0, 0), (1, 0), (3, 2)], ids=["TB", "TB1", "TB3_at2"])
def test_raw_icdf_at_any_noise_column_lowers(width, index, foreign):
    vocoder, step, cond = foreign("coqui", "raw", "torchscript")
    model = from_step(step, cond, "raw-icdf", conditioning_layout=vocoder.layout, noise_width=width,
                      noise_index=index)
    result = waveopt.optimize(model, preset="native")
    ops = [n.op_type for n in result.model.graph.node]
    assert "Loop" not in ops and ops.count("WaveRNNLoop") == 1
    summary = next(r.summary for r in result.reports if r.name == "lower_native")
    assert "RAW inverse CDF" in summary and ("[T, B]" if width == 0 else f"[T, B, {width}]") in summary
    mels, steps = _feed(vocoder, frames=4, seed=5)
    noise = step_noise(steps, 2, width, seed=6)
    expected = reference_samples(vocoder, mels, noise, index=index)
    got = run_lowered(result.model, {"mels": mels, "noise": noise})["samples"]
    _assert_same_or_near_tie(got, expected, vocoder, mels, noise, index)


@pytest.mark.parametrize("sampler, mode, named, attribute", [
    ("mol-gumbel", "mol", "MOL Gumbel-max (components at noise[t, b, 0:10], logistic at column 10)", "gumbel_max"),
    ("raw-argmax", "raw", "RAW argmax", "argmax"),
])
@pytest.mark.parametrize("exporter", EXPORTERS)
def test_gumbel_max_and_argmax_samplers_lower_to_the_op(sampler, mode, named, attribute, exporter, foreign):
    vocoder, step, cond = foreign("coqui", mode, exporter)
    model = from_step(step, cond, sampler, conditioning_layout=vocoder.layout)
    native = waveopt.optimize(model, preset="native")
    summary = next(r.summary for r in native.reports if r.name == "lower_native")
    assert named in summary, summary
    ops = [n for n in native.model.graph.node if n.op_type == "WaveRNNLoop"]
    assert len(ops) == 1 and "Loop" not in _all_ops(native.model)
    assert {a.name: a.s.decode() for a in ops[0].attribute if a.name == "sampler"} == {"sampler": attribute}
    mels, steps = _feed(vocoder, frames=3, seed=7)
    feed = {"mels": mels}
    if sampler == "mol-gumbel":
        feed["noise"] = step_noise(steps, 2, 11, seed=8)
    expected = reference_samples(vocoder, mels, feed.get("noise"), sampler=attribute.split("_")[0])
    unoptimized = session(model).run(["samples"], feed)[0]
    # Gumbel-max and argmax have no CDF boundaries to tie at: the same samples.
    assert np.abs(unoptimized - expected).max() <= 1e-4
    assert np.abs(run_lowered(native.model, feed)["samples"] - expected).max() <= 1e-4
    if waveopt.ops.built():
        assert np.abs(session(native.model).run(["samples"], feed)[0] - expected).max() <= 1e-4


def _break_sampler(model: onnx.ModelProto) -> onnx.ModelProto:
    """The Loop's sampler made into one no reference has: ``cdf < u`` -> ``cdf < 2`` (always
    the last class or component)."""
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    body = next(n for n in broken.graph.node if n.op_type == "Loop").attribute[0].g
    less = next(n for n in body.node if n.op_type == "Less")
    broken.graph.initializer.append(onnx.helper.make_tensor("two_for_test", onnx.TensorProto.FLOAT, [], [2.0]))
    less.input[1] = "two_for_test"
    return broken


def test_a_sampler_the_op_lacks_keeps_the_portable_loop(foreign):
    vocoder, step, cond = foreign("coqui", "mol", "torchscript")
    model = _break_sampler(from_step(step, cond, "mol-icdf", conditioning_layout=vocoder.layout))
    native = waveopt.optimize(model, preset="native")
    summary = next(r.summary for r in native.reports if r.name == "lower_native")
    assert "not one of WaveRNN's MOL samplers" in summary, summary
    body_ops = _all_ops(native.model)
    assert "Loop" in body_ops and "WaveRNNLoop" not in body_ops and "GRU" not in body_ops
    loop = next(n for n in native.model.graph.node if n.op_type == "Loop")
    assert "FusedDense" not in [n.op_type for n in loop.attribute[0].g.node]
    portable = waveopt.optimize(model, passes=[p for p in waveopt.passes.PRESETS["portable"] if p != "pad_dims"])
    assert graph_stats(native.model).macs_per_step <= graph_stats(portable.model).macs_per_step
    assert graph_stats(native.model).macs_per_step <= 0.78 * step_macs(vocoder)
    mels, steps = _feed(vocoder, frames=3, seed=7)
    feed = {"mels": mels, "noise": step_noise(steps, 2, 2, seed=8)}
    assert waveopt.compare_models(model, native.model, feed).ok
