"""The fused op's argmax (RAW) and Gumbel-max (MOL) samplers, the op's ``sampler`` attribute.

Two references, on random weights and inputs:
- the op itself, teacher-forced on its own free-run samples: the same kernels give the same
  logits L_t, so each sample must be numpy's sampler of L_t (``argmax_sample``,
  ``gumbel_sample``): exactly for argmax; for Gumbel-max within 1e-5 (the logistic's libm
  and numpy's logs differ by ulps) unless the two best perturbed logits lie within 1e-5;
- the op's documented semantics in float64 numpy (``native_emulation.wavernn_loop``): the
  same samples, or a first difference at such a near-tie.
Both at 1 and 3 threads. Wrong attribute/noise combinations are ORT errors naming the problem.
"""

from __future__ import annotations

import numpy as np
import pytest
from native_emulation import wavernn_loop

from waveopt import ops
from waveopt.errors import WaveoptError
from waveopt.models.native_reference import NOISE_COLUMNS, STEP_INPUT_NAMES, WEIGHT_NAMES, loop_model
from waveopt.passes import argmax_sample, gumbel_sample
from waveopt.runtime import run, session

pytestmark = pytest.mark.skipif(not ops.built(), reason="the native op library is not built (make native)")

STEPS, BATCH, HIDDEN, FC = 300, 3, 40, 24
CASES = [("raw", "argmax", 64), ("mol", "gumbel_max", 30)]


def random_weights(classes: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    h, f = HIDDEN, FC
    shapes = {"u1": (3 * h,), "u2": (3 * h,), "u3": (f,), "W_hh1": (3 * h, h), "b_hh1": (3 * h,),
              "W_x2": (3 * h, h), "W_hh2": (3 * h, h), "b_hh2": (3 * h,), "W_fc1": (f, h), "W_fc2": (f, f),
              "W_fc3": (classes, f), "b_fc3": (classes,)}
    scale = {"W_hh1": 1.5 / np.sqrt(h), "W_x2": 1.5 / np.sqrt(h), "W_hh2": 1.5 / np.sqrt(h),
             "W_fc1": 1.5 / np.sqrt(h), "W_fc2": 1.5 / np.sqrt(f), "W_fc3": 3 / np.sqrt(f)}
    return {n: (rng.standard_normal(shapes[n]) * scale.get(n, 0.5)).astype(np.float32) for n in WEIGHT_NAMES}


def random_feeds(sampler: str, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    widths = {"gi1": 3 * HIDDEN, "gi2": 3 * HIDDEN, "f1": FC, "f2": FC}
    feeds = {n: rng.standard_normal((STEPS, BATCH, widths[n])).astype(np.float32) for n in STEP_INPUT_NAMES}
    feeds["noise"] = rng.uniform(1e-5, 1 - 1e-5, (STEPS, BATCH, NOISE_COLUMNS[sampler])).astype(np.float32)
    return feeds


def numpy_sampler(sampler: str, logits: np.ndarray, noise: np.ndarray) -> np.ndarray:
    return argmax_sample(logits) if sampler == "argmax" else gumbel_sample(logits, noise)


def gumbel_gap(logits: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Per row: the distance between the two best perturbed mixture logits."""
    perturbed = np.sort(logits[:, :10] - np.log(-np.log(noise[:, :10])), axis=-1)
    return perturbed[:, -1] - perturbed[:, -2]


@pytest.fixture(scope="module", params=CASES, ids=[c[1] for c in CASES])
def case(request):
    mode, sampler, classes = request.param
    weights = random_weights(classes, seed=classes)
    feeds = random_feeds(sampler, seed=classes + 1)
    return mode, sampler, weights, feeds


@pytest.mark.parametrize("threads", [1, 3])
def test_samples_are_the_samplers_of_the_ops_own_logits(case, threads):
    mode, sampler, weights, feeds = case
    free = session(loop_model(weights, mode, sampler=sampler), threads=threads)
    samples = run(free, ["samples"], feeds)[0]
    forced = session(loop_model(weights, mode, teacher_forced=True, sampler=sampler), threads=threads)
    prev = np.concatenate([np.zeros((1, BATCH), np.float32), samples[:-1]])
    step_feeds = {n: feeds[n] for n in STEP_INPUT_NAMES}
    logits = run(forced, ["logits"], {**step_feeds, "prev_samples": prev})[0]
    expected = np.stack([numpy_sampler(sampler, logits[t], feeds["noise"][t]) for t in range(STEPS)])
    different = np.abs(samples - expected) > (1e-5 if sampler == "gumbel_max" else 0)
    if sampler == "gumbel_max":
        gaps = np.stack([gumbel_gap(logits[t], feeds["noise"][t]) for t in range(STEPS)])
        different &= gaps > 1e-5
    assert not different.any(), f"{int(different.sum())} samples are not the sampler's"
    # Not a constant stream: the sampler really follows the logits.
    assert len(np.unique(samples)) > 10


def test_samples_match_the_float64_semantics(case):
    mode, sampler, weights, feeds = case
    samples = run(session(loop_model(weights, mode, sampler=sampler)), ["samples"], feeds)[0]
    args = [feeds[n].astype(np.float64) for n in STEP_INPUT_NAMES] + [weights[n].astype(np.float64)
                                                                       for n in WEIGHT_NAMES]
    expected = wavernn_loop(*args, feeds["noise"], mode=mode, teacher_forced=False, sampler=sampler)
    for b in range(BATCH):
        bad = np.flatnonzero(np.abs(samples[:, b] - expected[:, b]) > 1e-4)
        if bad.size == 0:
            continue
        t = bad[0]  # the first difference must be a near-tie of the float64 run's logits
        prev = np.concatenate([[0.0], expected[:t, b]])[:, None].repeat(BATCH, 1)
        logits = wavernn_loop(*[a[:t + 1] if i < 4 else a for i, a in enumerate(args)], prev,
                              mode=mode, teacher_forced=True)[t, b:b + 1]
        if sampler == "argmax":
            top = np.sort(logits[0])
            gap = top[-1] - top[-2]
        else:
            gap = gumbel_gap(logits, feeds["noise"][t, b:b + 1])[0]
        assert gap <= 1e-4, f"row {b} differs first at step {t}, not at a near-tie (gap {gap:g})"
        assert t >= 20, f"row {b} differs already at step {t}"


@pytest.mark.parametrize("mode, sampler, message", [
    ("raw", "gumbel_max", "sampler must be"),
    ("mol", "argmax", "sampler must be"),
    ("raw", "top_k", "got 'top_k'"),
])
def test_a_sampler_the_mode_lacks_is_refused(mode, sampler, message):
    weights = random_weights(64 if mode == "raw" else 30, seed=0)
    model = loop_model(weights, mode, sampler="inverse_cdf")
    for attribute in model.graph.node[0].attribute:
        if attribute.name == "mode":
            attribute.s = mode.encode()
    model.graph.node[0].attribute.add(name="sampler", type=3, s=sampler.encode())  # 3: STRING
    with pytest.raises(WaveoptError, match=message):
        run(session(model), ["samples"], random_feeds("inverse_cdf", seed=0))


def test_noise_of_the_wrong_width_is_refused():
    weights = random_weights(30, seed=0)
    model = loop_model(weights, "mol", sampler="gumbel_max")
    feeds = random_feeds("inverse_cdf", seed=0)  # [T, B, 2], Gumbel-max reads 11 columns
    model.graph.input[-1].type.tensor_type.shape.dim[2].dim_param = "C"  # let the op see it
    with pytest.raises(WaveoptError, match=r"noise\) has shape \[300, 3, 2\], expected \[300, 3, 11\]"):
        run(session(model), ["samples"], feeds)
