"""The fatchord WaveRNN in PyTorch, with fatchord's module and parameter names.

A checkpoint trained with fatchord's WaveRNN (github.com/fatchord/WaveRNN,
``models/fatchord_version.py``) loads into :class:`WaveRNN` with ``strict=True``.

Generation differs from fatchord's in one way only: sampling is driven by a noise
tensor of uniforms (``[T, B, 2]``) instead of torch's random generator, so the
reference, the exported ONNX Loop and every optimized form draw the same samples
from the same noise:

- RAW: ``class = #{k : cdf_k < u0}`` (inverse CDF of the softmax), and the value fed
  back is ``2·class/(n_classes-1) - 1`` (mu-law domain, decoded at the end).
- MOL: the mixture component is chosen by inverse CDF of ``softmax(logit_probs)``
  at ``u0``; the logistic is sampled at ``u1`` as fatchord does
  (``mean + exp(log_scale)·(log u1 - log(1-u1))``, clamped to [-1, 1]).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..folding import fold_count

__all__ = [
    "HParams",
    "WaveRNN",
    "UpsampleNetwork",
    "MelResNet",
    "ResBlock",
    "Stretch2d",
    "sample_raw",
    "sample_mol",
    "decode_mu_law",
    "fold_with_overlap",
    "xfade_and_unfold",
]

MOL_MIXTURES = 10
LOG_SCALE_MIN = math.log(1e-14)


@dataclasses.dataclass(frozen=True)
class HParams:
    """WaveRNN hyperparameters; the defaults are fatchord's."""

    mode: str = "raw"  # "raw" (softmax over 2**bits classes) or "mol"
    bits: int = 9
    rnn_dims: int = 512
    fc_dims: int = 512
    feat_dims: int = 80
    upsample_factors: tuple[int, ...] = (5, 5, 11)
    compute_dims: int = 128
    res_out_dims: int = 128
    res_blocks: int = 10
    pad: int = 2
    sample_rate: int = 22050
    mu_law: bool = True

    def __post_init__(self):
        if self.mode not in ("raw", "mol"):
            raise ValueError(f"mode must be 'raw' or 'mol', not {self.mode!r}")
        if self.res_out_dims % 4:
            raise ValueError(f"res_out_dims must be a multiple of 4, not {self.res_out_dims}")
        object.__setattr__(self, "upsample_factors", tuple(int(f) for f in self.upsample_factors))

    @property
    def hop_length(self) -> int:
        return int(np.prod(self.upsample_factors))

    @property
    def aux_dims(self) -> int:
        return self.res_out_dims // 4

    @property
    def n_classes(self) -> int:
        return 2**self.bits if self.mode == "raw" else 3 * MOL_MIXTURES

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["upsample_factors"] = list(self.upsample_factors)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "HParams":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class ResBlock(nn.Module):
    def __init__(self, dims: int):
        super().__init__()
        self.conv1 = nn.Conv1d(dims, dims, kernel_size=1, bias=False)
        self.conv2 = nn.Conv1d(dims, dims, kernel_size=1, bias=False)
        self.batch_norm1 = nn.BatchNorm1d(dims)
        self.batch_norm2 = nn.BatchNorm1d(dims)

    def forward(self, x):
        residual = x
        x = F.relu(self.batch_norm1(self.conv1(x)))
        x = self.batch_norm2(self.conv2(x))
        return x + residual


class MelResNet(nn.Module):
    def __init__(self, res_blocks: int, in_dims: int, compute_dims: int, res_out_dims: int, pad: int):
        super().__init__()
        self.conv_in = nn.Conv1d(in_dims, compute_dims, kernel_size=pad * 2 + 1, bias=False)
        self.batch_norm = nn.BatchNorm1d(compute_dims)
        self.layers = nn.ModuleList([ResBlock(compute_dims) for _ in range(res_blocks)])
        self.conv_out = nn.Conv1d(compute_dims, res_out_dims, kernel_size=1)

    def forward(self, x):
        x = F.relu(self.batch_norm(self.conv_in(x)))
        for layer in self.layers:
            x = layer(x)
        return self.conv_out(x)


class Stretch2d(nn.Module):
    """Nearest-neighbour stretch of the last two axes by integer factors."""

    def __init__(self, x_scale: int, y_scale: int):
        super().__init__()
        self.x_scale = x_scale
        self.y_scale = y_scale

    def forward(self, x):
        # repeat_interleave is fatchord's unsqueeze/repeat/view, in a form every
        # exporter handles with dynamic lengths.
        if self.y_scale != 1:
            x = x.repeat_interleave(self.y_scale, dim=2)
        return x.repeat_interleave(self.x_scale, dim=3)


class UpsampleNetwork(nn.Module):
    def __init__(self, feat_dims, upsample_scales, compute_dims, res_blocks, res_out_dims, pad):
        super().__init__()
        total_scale = int(np.prod(upsample_scales))
        self.indent = pad * total_scale
        self.resnet = MelResNet(res_blocks, feat_dims, compute_dims, res_out_dims, pad)
        self.resnet_stretch = Stretch2d(total_scale, 1)
        self.up_layers = nn.ModuleList()
        for scale in upsample_scales:
            k_size = (1, scale * 2 + 1)
            conv = nn.Conv2d(1, 1, kernel_size=k_size, padding=(0, scale), bias=False)
            with torch.no_grad():
                conv.weight.fill_(1.0 / k_size[1])
            self.up_layers.append(Stretch2d(scale, 1))
            self.up_layers.append(conv)

    def forward(self, m):
        """m [B, feat, frames + 2·pad] -> (mels [B, T, feat], aux [B, T, res_out]), T = frames·hop."""
        aux = self.resnet(m).unsqueeze(1)
        aux = self.resnet_stretch(aux).squeeze(1)
        m = m.unsqueeze(1)
        for f in self.up_layers:
            m = f(m)
        m = m.squeeze(1)[:, :, self.indent : m.shape[-1] - self.indent]
        return m.transpose(1, 2), aux.transpose(1, 2)


def sample_raw(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sample of softmax(logits) [B, C] at u [B]: the value in [-1, 1] fed back."""
    n_classes = logits.shape[-1]
    cdf = torch.cumsum(torch.softmax(logits, dim=-1), dim=-1)
    index = (cdf < u.unsqueeze(-1)).sum(dim=-1).clamp(max=n_classes - 1)
    return 2.0 * index.to(logits.dtype) / (n_classes - 1.0) - 1.0


def sample_mol(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Sample of a mixture of logistics [B, 30] with uniforms u [B, 2] (component, value)."""
    n = MOL_MIXTURES
    logit_probs, means, log_scales = logits[:, :n], logits[:, n : 2 * n], logits[:, 2 * n : 3 * n]
    cdf = torch.cumsum(torch.softmax(logit_probs, dim=-1), dim=-1)
    k = (cdf < u[:, :1]).sum(dim=-1, keepdim=True).clamp(max=n - 1)
    mean = means.gather(1, k).squeeze(1)
    log_scale = log_scales.gather(1, k).squeeze(1).clamp(min=LOG_SCALE_MIN)
    u1 = u[:, 1]
    x = mean + torch.exp(log_scale) * (torch.log(u1) - torch.log(1.0 - u1))
    return x.clamp(-1.0, 1.0)


def decode_mu_law(y, mu: int):
    """fatchord's mu-law expansion of y in [-1, 1] (numpy or torch)."""
    mu = mu - 1
    lib = torch if isinstance(y, torch.Tensor) else np
    return lib.sign(y) / mu * ((1 + mu) ** lib.abs(y) - 1)


def fold_with_overlap(x: torch.Tensor, target: int, overlap: int) -> torch.Tensor:
    """fatchord's fold: [1, T, C] -> [folds, target + 2·overlap, C], zero-padded at the end.

    The folds start ``target + overlap`` apart; their number is ``fold_count`` (fatchord's,
    except that T <= overlap makes one fold where fatchord's arithmetic makes none).
    """
    _, total_len, _ = x.shape
    num_folds = fold_count(total_len, target, overlap)
    stride, length = target + overlap, target + 2 * overlap
    padding = (num_folds - 1) * stride + length - total_len
    if padding > 0:
        x = F.pad(x, (0, 0, 0, padding))
    return torch.stack([x[0, i * stride : i * stride + length] for i in range(num_folds)])


def xfade_and_unfold(y: np.ndarray, overlap: int) -> np.ndarray:
    """fatchord's equal-power cross-fade of folds [folds, L] back into one signal."""
    num_folds, length = y.shape
    target = length - 2 * overlap
    total_len = num_folds * (target + overlap) + overlap
    silence_len = overlap // 2
    fade_len = overlap - silence_len
    t = np.linspace(-1, 1, fade_len, dtype=np.float64)
    fade_in = np.concatenate([np.zeros(silence_len), np.sqrt(0.5 * (1 + t))])
    fade_out = np.concatenate([np.sqrt(0.5 * (1 - t)), np.zeros(silence_len)])
    y = np.array(y, dtype=np.float64)
    y[:, :overlap] *= fade_in
    y[:, -overlap:] *= fade_out
    unfolded = np.zeros(total_len, dtype=np.float64)
    for i in range(num_folds):
        start = i * (target + overlap)
        unfolded[start : start + length] += y[i]
    return unfolded


class WaveRNN(nn.Module):
    """fatchord's WaveRNN: upsampling conditioning network + two GRUs + three dense layers."""

    def __init__(self, hp: HParams | None = None, **overrides):
        super().__init__()
        hp = dataclasses.replace(hp or HParams(), **overrides)
        self.hp = hp
        self.mode = hp.mode.upper()
        self.pad = hp.pad
        self.n_classes = hp.n_classes
        self.rnn_dims = hp.rnn_dims
        self.aux_dims = hp.aux_dims
        self.hop_length = hp.hop_length
        self.sample_rate = hp.sample_rate
        self.upsample = UpsampleNetwork(
            hp.feat_dims, hp.upsample_factors, hp.compute_dims, hp.res_blocks, hp.res_out_dims, hp.pad
        )
        self.I = nn.Linear(hp.feat_dims + self.aux_dims + 1, hp.rnn_dims)
        self.rnn1 = nn.GRU(hp.rnn_dims, hp.rnn_dims, batch_first=True)
        self.rnn2 = nn.GRU(hp.rnn_dims + self.aux_dims, hp.rnn_dims, batch_first=True)
        self.fc1 = nn.Linear(hp.rnn_dims + self.aux_dims, hp.fc_dims)
        self.fc2 = nn.Linear(hp.fc_dims + self.aux_dims, hp.fc_dims)
        self.fc3 = nn.Linear(hp.fc_dims, self.n_classes)
        self.register_buffer("step", torch.zeros(1, dtype=torch.long))

    # --- conditioning -----------------------------------------------------------------
    def condition(self, mels: torch.Tensor):
        """mels [B, feat, frames] -> (m [B, T, feat], aux [B, T, 4·aux]) with T = frames·hop.

        fatchord pads ``pad`` frames of zeros on both sides before upsampling.
        """
        mels = F.pad(mels, (self.pad, self.pad))
        return self.upsample(mels)

    def split_aux(self, aux: torch.Tensor):
        d = self.aux_dims
        return [aux[..., d * i : d * (i + 1)] for i in range(4)]

    # --- one step of the recurrence ----------------------------------------------------
    def gru_cells(self) -> tuple[nn.GRUCell, nn.GRUCell]:
        """GRUCells sharing rnn1/rnn2's parameters (fatchord's get_gru_cell)."""
        cells = []
        for gru in (self.rnn1, self.rnn2):
            cell = nn.GRUCell(gru.input_size, gru.hidden_size)
            cell.weight_hh = gru.weight_hh_l0
            cell.weight_ih = gru.weight_ih_l0
            cell.bias_hh = gru.bias_hh_l0
            cell.bias_ih = gru.bias_ih_l0
            cells.append(cell)
        return cells[0], cells[1]

    def step_logits(self, x, m_t, a1, a2, a3, a4, h1, h2, cells=None):
        """One sample of fatchord's generate loop: returns (logits, h1, h2).

        x [B, 1] previous sample, m_t [B, feat], a1..a4 [B, aux], h1/h2 [B, rnn].
        """
        rnn1, rnn2 = cells or self.gru_cells()
        x = self.I(torch.cat([x, m_t, a1], dim=1))
        h1 = rnn1(x, h1)
        x = x + h1
        h2 = rnn2(torch.cat([x, a2], dim=1), h2)
        x = x + h2
        x = F.relu(self.fc1(torch.cat([x, a3], dim=1)))
        x = F.relu(self.fc2(torch.cat([x, a4], dim=1)))
        return self.fc3(x), h1, h2

    def sample(self, logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The value fed back, [B], from logits [B, C] and uniforms u [B, 2]."""
        return sample_raw(logits, u[:, 0]) if self.mode == "RAW" else sample_mol(logits, u)

    # --- training-style forward (fatchord's) ------------------------------------------
    def forward(self, x, mels):
        """Teacher-forced logits: x [B, T] previous samples, mels [B, feat, frames'] (pre-padded)."""
        bsize = x.size(0)
        h1 = torch.zeros(1, bsize, self.rnn_dims, device=x.device)
        h2 = torch.zeros(1, bsize, self.rnn_dims, device=x.device)
        mels, aux = self.upsample(mels)
        a1, a2, a3, a4 = self.split_aux(aux)
        x = torch.cat([x.unsqueeze(-1), mels, a1], dim=2)
        x = self.I(x)
        res = x
        x, _ = self.rnn1(x, h1)
        x = x + res
        res = x
        x, _ = self.rnn2(torch.cat([x, a2], dim=2), h2)
        x = x + res
        x = F.relu(self.fc1(torch.cat([x, a3], dim=2)))
        x = F.relu(self.fc2(torch.cat([x, a4], dim=2)))
        return self.fc3(x)

    @torch.no_grad()
    def teacher_forced_logits(self, mels: torch.Tensor, prev_samples: torch.Tensor) -> torch.Tensor:
        """Per-step logits [T, B, C] given mels [B, feat, frames] and previous samples [T, B].

        ``prev_samples[t]`` is the value fed into step t (the sample of step t-1).
        """
        return self.forward(prev_samples.transpose(0, 1), F.pad(mels, (self.pad, self.pad))).transpose(0, 1)

    # --- generation ---------------------------------------------------------------------
    @torch.no_grad()
    def generate_samples(self, mels: torch.Tensor, noise: torch.Tensor, fold: tuple[int, int] | None = None):
        """Free-running samples [T, B] (the values fed back), fatchord's loop driven by noise [T, B, 2].

        With ``fold=(target, overlap)`` the conditioning of a one-item batch is folded
        into overlapping segments generated as a batch (fatchord's batched mode).
        """
        m, aux = self.condition(mels)
        if fold is not None:
            m, aux = fold_with_overlap(m, *fold), fold_with_overlap(aux, *fold)
        bsize, steps, _ = m.shape
        if noise.shape[0] < steps or noise.shape[1] != bsize:
            raise ValueError(f"noise must be [>= {steps}, {bsize}, 2], got {list(noise.shape)}")
        cells = self.gru_cells()
        h1 = torch.zeros(bsize, self.rnn_dims)
        h2 = torch.zeros(bsize, self.rnn_dims)
        x = torch.zeros(bsize, 1)
        a1, a2, a3, a4 = self.split_aux(aux)
        out = []
        for t in range(steps):
            logits, h1, h2 = self.step_logits(x, m[:, t], a1[:, t], a2[:, t], a3[:, t], a4[:, t], h1, h2, cells)
            s = self.sample(logits, noise[t])
            out.append(s)
            x = s.unsqueeze(-1)
        return torch.stack(out)

    @torch.no_grad()
    def generate(self, mels: torch.Tensor, noise: torch.Tensor, fold: tuple[int, int] | None = None) -> np.ndarray:
        """The waveform as fatchord's ``generate`` writes it: [B, (frames-1)·hop] float32.

        Mu-law decoding (RAW with mu_law), cross-fade of folds, trim, 20-hop fade-out.
        """
        samples = self.generate_samples(mels, noise, fold).transpose(0, 1).double().numpy()
        return self.finish_waveform(samples, mels.shape[-1], fold)

    def finish_waveform(self, samples: np.ndarray, frames: int, fold=None) -> np.ndarray:
        """Loop samples [B, T] -> waveform [B', (frames-1)·hop] (fatchord's post-processing)."""
        samples = np.asarray(samples, dtype=np.float64)
        if self.mode == "RAW" and self.hp.mu_law:
            samples = decode_mu_law(samples, self.n_classes)
        if fold is not None:
            samples = xfade_and_unfold(samples, fold[1])[None]
        wave_len = (frames - 1) * self.hop_length
        wave = samples[:, :wave_len].copy()
        fade = min(20 * self.hop_length, wave.shape[1])
        wave[:, wave.shape[1] - fade :] *= np.linspace(1, 0, 20 * self.hop_length)[20 * self.hop_length - fade :]
        return wave.astype(np.float32)
