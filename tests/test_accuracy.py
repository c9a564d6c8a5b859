"""The guard's measures (waveopt.quant.accuracy) on inputs whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from waveopt.quant.accuracy import (
    class_agreement,
    log_mel,
    log_mel_distance,
    logit_snr_db,
    sample_agreement,
)


def test_logit_snr_of_known_noise():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((4000, 1, 64))
    noisy = ref + 0.1 * rng.standard_normal(ref.shape)  # noise power 1/100 of the signal's
    assert logit_snr_db(ref, noisy) == pytest.approx(20.0, abs=0.3)
    assert logit_snr_db(ref, ref) == float("inf")


def test_logit_snr_ignores_a_per_step_shift():
    """Softmax does not see a constant added to a step's logits, so neither does the SNR."""
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((100, 2, 30))
    shifted = ref + rng.standard_normal((100, 2, 1)) * 5
    assert logit_snr_db(ref, shifted) > 100


def test_class_and_sample_agreement():
    ref = np.array([[[0.0, 1.0, 0.0]], [[2.0, 0.0, 0.0]]])
    cand = np.array([[[0.0, 0.5, 0.9]], [[2.0, 0.0, 0.0]]])
    assert class_agreement(ref, cand) == 0.5
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((200, 1, 30)).astype(np.float32) * 2
    noise = rng.uniform(1e-5, 1 - 1e-5, (200, 1, 2)).astype(np.float32)
    assert sample_agreement(logits, logits, noise, "mol") == 1.0
    far = logits + rng.standard_normal(logits.shape).astype(np.float32) * 3
    assert sample_agreement(logits, far, noise, "mol") < 0.5


def test_log_mel_distance():
    sr = 22050
    t = np.arange(sr) / sr
    rng = np.random.default_rng(3)
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    assert log_mel_distance(tone, tone, sr) == 0.0
    slightly = log_mel_distance(tone, tone + 1e-3 * rng.standard_normal(sr), sr)
    very = log_mel_distance(tone, 0.5 * rng.standard_normal(sr), sr)
    assert 0 < slightly < very and very > 10
    # the tone's energy lands in the mel band around 440 Hz
    spectrum = log_mel(tone, sr).mean(0)
    assert 3 <= int(np.argmax(spectrum)) <= 15
