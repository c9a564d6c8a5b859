"""Seeded inputs for the demo and for checks: speech-like mels and uniform noise (numpy only)."""

from __future__ import annotations

import numpy as np

__all__ = ["demo_mels", "demo_prev_samples", "uniform_noise", "NOISE_EPS"]

# Uniforms stay inside (eps, 1 - eps), as fatchord's sampler draws them: log(u) stays finite.
NOISE_EPS = 1e-5


def demo_mels(frames: int = 40, batch: int = 1, feat_dims: int = 80, seed: int = 0) -> np.ndarray:
    """Speech-like mel spectrograms [batch, feat_dims, frames] in [0, 1] (fatchord's scale).

    Slowly moving formant bands over a spectral tilt, with seeded noise.
    """
    rng = np.random.default_rng(seed)
    bins = np.arange(feat_dims)[:, None] / feat_dims
    time = np.arange(frames)[None, :]
    out = []
    for _ in range(batch):
        level = 0.5 + 0.2 * np.sin(2 * np.pi * time / rng.uniform(15, 30))
        spec = (0.7 - 0.4 * bins) * level
        for formant in rng.uniform(0.05, 0.6, size=3):
            centre = formant + 0.05 * np.sin(2 * np.pi * time / rng.uniform(8, 20) + rng.uniform(0, 6))
            spec = spec + 0.3 * np.exp(-((bins - centre) ** 2) / 0.003)
        spec = spec + 0.03 * rng.standard_normal(spec.shape)
        out.append(np.clip(spec, 0.0, 1.0))
    return np.stack(out).astype(np.float32)


def demo_prev_samples(steps: int, batch: int = 1, seed: int = 0) -> np.ndarray:
    """Plausible previous samples [steps, batch] in [-1, 1]: a few sines plus noise."""
    rng = np.random.default_rng(seed + 1)
    t = np.arange(steps)[:, None] / 22050.0
    wave = sum(0.3 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6, size=(1, batch))) for f in (110, 220, 470))
    wave = wave + 0.05 * rng.standard_normal((steps, batch))
    return np.clip(wave, -1, 1).astype(np.float32)


def uniform_noise(steps: int, batch: int, seed: int = 0) -> np.ndarray:
    """The sampler's noise [steps, batch, 2]: uniforms in (NOISE_EPS, 1 - NOISE_EPS)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(NOISE_EPS, 1.0 - NOISE_EPS, size=(steps, batch, 2)).astype(np.float32)
