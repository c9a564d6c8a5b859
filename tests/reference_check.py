"""Compare ONNX free-running samples with the PyTorch reference under the near-tie rule.

Samples must agree at every step, or the first step where they disagree must be a
near-tie: the uniform that chose the sample lies within ``TIE_EPS`` of a CDF boundary of
the reference's distribution at that step (computed teacher-forced on the shared history),
so 1e-7 differences in logits may legitimately pick the neighbouring class.

MOL samples are continuous and fed back, so float noise of 1e-7 grows over hundreds of
steps, and ``x = mean + scale·logit(u)`` can cancel terms of magnitude 2 or more, so the two
runs may drift apart by more than ``MOL_ATOL`` without any tie. Such a first mismatch is
accepted only if the reference, teacher-forced on the *tested* run's own history, draws the
tested sample at that step within ``MOL_ATOL`` relative to the terms it adds
(``1 + |mean| + |scale·logit(u)|``): the step itself was computed right.
"""

from __future__ import annotations

import numpy as np
import torch

from waveopt.models.wavernn import LOG_SCALE_MIN, MOL_MIXTURES, fold_with_overlap, sample_mol

TIE_EPS = 1e-5
MOL_ATOL = 1e-4


def first_mismatch(ref: np.ndarray, got: np.ndarray, atol: float) -> tuple[int, int] | None:
    """(step, batch) of the earliest disagreement of [T, B] samples, or None."""
    bad = np.abs(ref - got) > atol
    if not bad.any():
        return None
    steps = np.argwhere(bad)
    k = steps[:, 0].min()
    return int(k), int(steps[steps[:, 0] == k][0, 1])


def _logits_on(model, mels: np.ndarray, history: np.ndarray, step: int, fold=None) -> torch.Tensor:
    """The reference's logits [B, N] at ``step``, teacher-forced on the samples ``history``."""
    prev = np.concatenate([np.zeros_like(history[:1]), history[:-1]])
    with torch.no_grad():
        return _teacher_forced(model, torch.from_numpy(mels), torch.from_numpy(prev), fold)[step]


def boundary_distance(model, mels: np.ndarray, ref_samples: np.ndarray, noise: np.ndarray,
                      step: int, batch: int, fold=None) -> float:
    """Distance of the step's choosing uniform from the nearest CDF boundary of the reference."""
    logits = _logits_on(model, mels, ref_samples, step, fold)[batch]
    if model.mode == "MOL":
        logits = logits[:10]
    cdf = torch.cumsum(torch.softmax(logits, dim=-1), dim=-1).numpy()
    return float(np.abs(cdf - noise[step, batch, 0]).min())


def _mol_sample_and_terms(logits: torch.Tensor, u: np.ndarray) -> tuple[float, float]:
    """fatchord's MOL sample of one row, and 1 + |mean| + |scale·logit(u1)| of its sum."""
    sample = float(sample_mol(logits[None], torch.from_numpy(u[None]))[0])
    cdf = torch.cumsum(torch.softmax(logits[:MOL_MIXTURES], -1), -1)
    k = min(int((cdf < float(u[0])).sum()), MOL_MIXTURES - 1)
    mean, log_scale = float(logits[MOL_MIXTURES + k]), max(float(logits[2 * MOL_MIXTURES + k]), LOG_SCALE_MIN)
    logistic = np.exp(log_scale) * (np.log(u[1]) - np.log1p(-u[1]))
    return sample, 1.0 + abs(mean) + abs(logistic)


def _teacher_forced(model, mels, prev, fold):
    if fold is None:
        return model.teacher_forced_logits(mels, prev)
    m, aux = model.condition(mels)
    m, aux = fold_with_overlap(m, *fold), fold_with_overlap(aux, *fold)
    cells = model.gru_cells()
    h1 = torch.zeros(m.shape[0], model.rnn_dims)
    h2 = torch.zeros_like(h1)
    a = model.split_aux(aux)
    out = []
    for t in range(m.shape[1]):
        logits, h1, h2 = model.step_logits(prev[t].unsqueeze(-1), m[:, t], *(x[:, t] for x in a), h1, h2, cells)
        out.append(logits)
    return torch.stack(out)


def assert_samples_match(model, mels, noise, ref_samples, got_samples, fold=None):
    """The near-tie rule; returns the number of leading steps that agree."""
    atol = MOL_ATOL if model.mode == "MOL" else 0.0
    assert ref_samples.shape == got_samples.shape
    mismatch = first_mismatch(ref_samples, got_samples, atol)
    if mismatch is None:
        return ref_samples.shape[0]
    step, batch = mismatch
    if model.mode == "MOL":
        logits = _logits_on(model, mels, got_samples, step, fold)[batch]
        redrawn, terms = _mol_sample_and_terms(logits, noise[step, batch])
        if abs(redrawn - got_samples[step, batch]) <= atol * terms:
            return step  # the step is right; its history drifted (see the module docstring)
    distance = boundary_distance(model, mels, ref_samples, noise, step, batch, fold)
    assert distance < TIE_EPS, (
        f"samples differ first at step {step} (batch {batch}): ref {ref_samples[step, batch]} "
        f"got {got_samples[step, batch]}, and it is no near-tie (u is {distance:.2e} from a CDF boundary)"
    )
    return step
