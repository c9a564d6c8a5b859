"""The three torch modules the exporter traces: conditioning, one loop step, post-processing.

Each is exported on its own with torch's dynamo exporter; ``export.py`` joins the
conditioning graph, an ONNX ``Loop`` around the step graph, and the post-processing graph
into one model. All tensors crossing the loop are time-major: ``[T, B, ...]``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..folding import fold_count
from .wavernn import WaveRNN, decode_mu_law

__all__ = ["Conditioning", "Step", "Sampler", "TeacherForcedStep", "PostProcess"]


class Conditioning(nn.Module):
    """mels [B, feat, frames] -> m [T, B', feat], aux [T, B', 4·aux] (optionally folded)."""

    def __init__(self, model: WaveRNN, fold: tuple[int, int] | None = None):
        super().__init__()
        self.model = model
        self.fold = fold

    def forward(self, mels):
        m, aux = self.model.condition(mels)
        if self.fold is not None:
            m, aux = self._fold(m), self._fold(aux)
        return m.transpose(0, 1), aux.transpose(0, 1)

    def _fold(self, x):
        """fatchord's fold_with_overlap written with shape arithmetic (no Python loop over folds)."""
        target, overlap = self.fold
        stride, length = target + overlap, target + 2 * overlap
        total = x.shape[1]
        num_folds = fold_count(total, target, overlap)
        x = F.pad(x, (0, 0, 0, num_folds * stride + overlap - total))
        index = torch.arange(num_folds).unsqueeze(1) * stride + torch.arange(length).unsqueeze(0)
        return x[0][index]


class Sampler(nn.Module):
    """The model's sampling as a module of its own, so exported nodes carry its name scope."""

    def __init__(self, model: WaveRNN):
        super().__init__()
        self.sample = model.sample

    def forward(self, logits, u):
        return self.sample(logits, u)


class Step(nn.Module):
    """One free-running step: (x [B,1], m_t, aux_t, h1, h2, u [B,2]) -> (x', h1', h2', sample [B])."""

    def __init__(self, model: WaveRNN):
        super().__init__()
        self.model = model
        self.rnn1, self.rnn2 = model.gru_cells()
        self.sampler = Sampler(model)

    def forward(self, x, m_t, aux_t, h1, h2, u):
        a1, a2, a3, a4 = self.model.split_aux(aux_t)
        logits, h1, h2 = self.model.step_logits(x, m_t, a1, a2, a3, a4, h1, h2, (self.rnn1, self.rnn2))
        sample = self.sampler(logits, u)
        return sample.unsqueeze(-1), h1, h2, sample


class TeacherForcedStep(nn.Module):
    """One teacher-forced step: (x [B,1], m_t, aux_t, h1, h2) -> (logits [B, C], h1', h2')."""

    def __init__(self, model: WaveRNN):
        super().__init__()
        self.model = model
        self.rnn1, self.rnn2 = model.gru_cells()

    def forward(self, x, m_t, aux_t, h1, h2):
        a1, a2, a3, a4 = self.model.split_aux(aux_t)
        return self.model.step_logits(x, m_t, a1, a2, a3, a4, h1, h2, (self.rnn1, self.rnn2))


class PostProcess(nn.Module):
    """(samples [T, B'], mels) -> waveform [B, (frames-1)·hop]: fatchord's generate epilogue.

    Mu-law decoding (RAW), equal-power cross-fade of folds, trim, and a 20-hop fade-out.
    """

    def __init__(self, model: WaveRNN, fold: tuple[int, int] | None = None):
        super().__init__()
        self.decode = model.mode == "RAW" and model.hp.mu_law
        self.n_classes = model.n_classes
        self.hop = model.hop_length
        self.fold = fold
        if fold is not None:
            _, overlap = fold
            silence = overlap // 2
            t = np.linspace(-1, 1, overlap - silence)
            fade_in = np.concatenate([np.zeros(silence), np.sqrt(0.5 * (1 + t))])
            fade_out = np.concatenate([np.sqrt(0.5 * (1 - t)), np.zeros(silence)])
            self.register_buffer("fade_in", torch.tensor(fade_in, dtype=torch.float32))
            self.register_buffer("fade_out", torch.tensor(fade_out, dtype=torch.float32))

    def forward(self, samples, mels):
        y = samples.transpose(0, 1)
        if self.decode:
            y = decode_mu_law(y, self.n_classes)
        if self.fold is not None:
            y = self._xfade_and_unfold(y)
        wave_len = (mels.shape[-1] - 1) * self.hop
        y = y[:, :wave_len]
        fade_len = 20 * self.hop
        position = torch.arange(y.shape[1], dtype=torch.float32)
        gain = ((wave_len - 1 - position) / (fade_len - 1)).clamp(max=1.0)
        return y * gain

    def _xfade_and_unfold(self, y):
        """[folds, target + 2·overlap] -> [1, folds·(target+overlap) + overlap], overlap-added."""
        _, overlap = self.fold
        head = y[:, :overlap] * self.fade_in
        body = y[:, overlap:-overlap]
        tail = y[:, -overlap:] * self.fade_out
        next_head = torch.cat([head[1:], torch.zeros_like(head[:1])], dim=0)
        pieces = torch.cat([body, tail + next_head], dim=1)
        return torch.cat([head[0], pieces.reshape(-1)]).unsqueeze(0)
