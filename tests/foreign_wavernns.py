"""Two other WaveRNN implementations' step structure, written here from their documented
architecture (small sizes), exported by torch and wrapped with ``waveopt.loop.from_step``.

``torchaudio``-like (torchaudio.models.WaveRNN): conditioning = MelResNet + stretch/conv
upsampling, channel-first outputs [B, C, T] (layout "bct"); the step's input layer is
``fc``, the GRUs are ``nn.GRU(batch_first=True)`` called on one step
(``rnn(x.unsqueeze(1), h)`` with states [1, B, H]); RAW only (multinomial sampling replaced
by inverse CDF, ``x = 2·c / (C - 1) - 1``).

``coqui``-like (TTS.vocoder.models.wavernn.Wavernn): conditioning = MelResNet + stretch
upsampling, batch-major outputs [B, T, C] (layout "btc"); the step's input layer is ``I``,
the GRUs are ``nn.GRUCell`` with states [B, H]; "bits" (RAW, inverse CDF instead of
Categorical sampling) or "mold" (30 logits, the discretized-mixture sampler: Gumbel-max
component over 10 uniforms, then the logistic at an 11th uniform).

Both step modules take (x [B, 1], m_t, a1_t, a2_t, a3_t, a4_t, h1, h2) and return
(logits, h1', h2'); :func:`export_step` exports the step with the dynamo or TorchScript
exporter, :func:`reference_logits` / :func:`reference_samples` run the same
generation in PyTorch.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["KINDS", "make_vocoder", "export_step", "export_conditioning", "step_macs", "reference_logits",
           "reference_samples", "step_noise"]

KINDS = ("torchaudio", "coqui")
MOL_K = 10
LOG_SCALE_MIN = float(np.log(1e-14))


class _MelResNet(nn.Module):
    def __init__(self, feat, compute, out, blocks, kernel):
        super().__init__()
        self.conv_in = nn.Conv1d(feat, compute, kernel_size=kernel, bias=False)
        self.bn = nn.BatchNorm1d(compute)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv1d(compute, compute, 1, bias=False), nn.BatchNorm1d(compute), nn.ReLU(),
                          nn.Conv1d(compute, compute, 1, bias=False), nn.BatchNorm1d(compute))
            for _ in range(blocks))
        self.conv_out = nn.Conv1d(compute, out, 1)

    def forward(self, x):
        x = F.relu(self.bn(self.conv_in(x)))
        for block in self.blocks:
            x = x + block(x)
        return self.conv_out(x)


class _Conditioning(nn.Module):
    """mels [B, feat, frames] -> m, a1..a4, each [B, C, T] ("bct") or [B, T, C] ("btc")."""

    def __init__(self, feat, aux, scales, pad, layout, smooth):
        super().__init__()
        self.scales, self.pad, self.layout, self.aux = scales, pad, layout, aux
        self.resnet = _MelResNet(feat, 12, 4 * aux, 1, 2 * pad + 1)
        self.total = int(np.prod(scales))
        self.smooth = nn.ModuleList(nn.Conv2d(1, 1, (1, 2 * s + 1), padding=(0, s), bias=False) for s in scales) \
            if smooth else None

    def forward(self, mels):
        if self.layout == "bct":  # torchaudio pads inside infer
            mels = F.pad(mels, (self.pad, self.pad))
        aux = self.resnet(mels).repeat_interleave(self.total, dim=2)
        m = mels.unsqueeze(1)
        for i, s in enumerate(self.scales):
            m = m.repeat_interleave(s, dim=3)
            if self.smooth is not None:
                m = self.smooth[i](m)
        indent = self.pad * self.total
        m = m.squeeze(1)[:, :, indent:m.shape[-1] - indent]
        parts = [m, *torch.split(aux, self.aux, dim=1)]
        return tuple(p.transpose(1, 2) if self.layout == "btc" else p for p in parts)


class TorchaudioStep(nn.Module):
    """torchaudio's per-step body: fc, nn.GRU(batch_first) x2 on [B, 1, ·], fc1, fc2, fc3."""

    def __init__(self, feat, aux, rnn, fc, classes):
        super().__init__()
        self.fc = nn.Linear(1 + feat + aux, rnn)
        self.rnn1 = nn.GRU(rnn, rnn, batch_first=True)
        self.rnn2 = nn.GRU(rnn + aux, rnn, batch_first=True)
        self.fc1 = nn.Linear(rnn + aux, fc)
        self.fc2 = nn.Linear(fc + aux, fc)
        self.fc3 = nn.Linear(fc, classes)

    def forward(self, x, m_t, a1, a2, a3, a4, h1, h2):
        x = self.fc(torch.cat([x, m_t, a1], dim=1))
        _, h1 = self.rnn1(x.unsqueeze(1), h1)
        x = x + h1[0]
        _, h2 = self.rnn2(torch.cat([x, a2], dim=1).unsqueeze(1), h2)
        x = x + h2[0]
        x = F.relu(self.fc1(torch.cat([x, a3], dim=1)))
        x = F.relu(self.fc2(torch.cat([x, a4], dim=1)))
        return self.fc3(x), h1, h2


class CoquiStep(nn.Module):
    """coqui's per-step body: I, GRUCell x2 with residuals, fc1, fc2, fc3."""

    def __init__(self, feat, aux, rnn, fc, classes):
        super().__init__()
        self.I = nn.Linear(1 + feat + aux, rnn)
        self.rnn1 = nn.GRUCell(rnn, rnn)
        self.rnn2 = nn.GRUCell(rnn + aux, rnn)
        self.fc1 = nn.Linear(rnn + aux, fc)
        self.fc2 = nn.Linear(fc + aux, fc)
        self.fc3 = nn.Linear(fc, classes)

    def forward(self, x, m_t, a1, a2, a3, a4, h1, h2):
        x = self.I(torch.cat([x, m_t, a1], dim=1))
        h1 = self.rnn1(x, h1)
        x = x + h1
        h2 = self.rnn2(torch.cat([x, a2], dim=1), h2)
        x = x + h2
        x = F.relu(self.fc1(torch.cat([x, a3], dim=1)))
        x = F.relu(self.fc2(torch.cat([x, a4], dim=1)))
        return self.fc3(x), h1, h2


class Vocoder(nn.Module):
    def __init__(self, kind, mode, feat=7, aux=5, rnn=47, fc=31, bits=5, scales=(3, 2), pad=1, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.kind, self.mode = kind, mode
        self.classes = 3 * MOL_K if mode == "mol" else 2 ** bits
        self.state_shape = (lambda b: (1, b, rnn)) if kind == "torchaudio" else (lambda b: (b, rnn))
        self.layout = "bct" if kind == "torchaudio" else "btc"
        self.conditioning = _Conditioning(feat, aux, scales, pad, self.layout, smooth=kind == "torchaudio")
        step = TorchaudioStep if kind == "torchaudio" else CoquiStep
        self.step = step(feat, aux, rnn, fc, self.classes)
        self.hop, self.feat, self.aux, self.rnn = int(np.prod(scales)), feat, aux, rnn
        with torch.no_grad():  # gates and outputs of a trained model, not stuck near 0.5
            for name, p in self.step.named_parameters():
                if name.startswith("rnn") and "weight" in name:
                    p.mul_(4.0)
            self.step.fc3.weight.mul_(3.0)
            for module in self.conditioning.modules():
                if isinstance(module, nn.BatchNorm1d):
                    module.running_mean.uniform_(-0.2, 0.2)
                    module.running_var.uniform_(0.5, 1.5)
        self.eval()

    def time_major(self, cond):
        return [c.permute(2, 0, 1) if self.layout == "bct" else c.transpose(0, 1) for c in cond]


def make_vocoder(kind: str, mode: str = "raw", seed: int = 0) -> Vocoder:
    if kind not in KINDS or (kind == "torchaudio" and mode != "raw"):
        raise ValueError(f"no {kind} {mode} vocoder")
    return Vocoder(kind, mode, seed=seed)


def export_step(vocoder: Vocoder, exporter: str) -> onnx.ModelProto:
    """The step as an ONNX model, exported with "dynamo" (its graph optimizer off, so the
    GRU weights are re-sliced into ONNX gate order at every step) or "torchscript"."""
    b = 3
    with torch.no_grad():
        cond = vocoder.conditioning(torch.rand(b, vocoder.feat, 5))
    cond_t = [c.select(2 if vocoder.layout == "bct" else 1, 0) for c in cond]
    args = (torch.rand(b, 1), *cond_t, torch.rand(*vocoder.state_shape(b)), torch.rand(*vocoder.state_shape(b)))
    names = ["x", "m_t", "a1", "a2", "a3", "a4", "h1", "h2"]
    batch_axis = 1 if vocoder.kind == "torchaudio" else 0
    axes = {n: {0: "batch"} for n in names[:6]} | {"h1": {batch_axis: "batch"}, "h2": {batch_axis: "batch"}}
    return _export(vocoder.step, args, names, ["logits", "h1_next", "h2_next"], axes, exporter)


def export_conditioning(vocoder: Vocoder) -> onnx.ModelProto:
    """The conditioning network (TorchScript exporter: the step is what the tests vary)."""
    names = ["m", "a1", "a2", "a3", "a4"]
    time_axis = 2 if vocoder.layout == "bct" else 1
    axes = {"mels": {0: "batch", 2: "frames"}} | {n: {0: "batch", time_axis: "steps"} for n in names}
    return _export(vocoder.conditioning, (torch.rand(3, vocoder.feat, 5),), ["mels"], names, axes, "torchscript")


def step_macs(vocoder: Vocoder) -> int:
    """Multiply-accumulates of one step, counted from the architecture (the reference)."""
    feat, aux, rnn = vocoder.feat, vocoder.aux, vocoder.rnn
    fc = vocoder.step.fc1.out_features
    return ((1 + feat + aux) * rnn + 3 * rnn * rnn + 3 * rnn * rnn + 3 * (rnn + aux) * rnn + 3 * rnn * rnn
            + (rnn + aux) * fc + (fc + aux) * fc + fc * vocoder.classes)


def _export(module, args, names, outputs, axes, exporter) -> onnx.ModelProto:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            f = io.BytesIO()
            torch.onnx.export(module, args, f, dynamo=False, opset_version=17, input_names=names,
                              output_names=outputs, dynamic_axes=axes)
            return onnx.load_from_string(f.getvalue())
        dims: dict = {}
        shapes = {n: {axis: dims.setdefault(d, torch.export.Dim(d, min=2)) for axis, d in axes[n].items()}
                  for n in names}
        program = torch.onnx.export(module, args, dynamo=True, dynamic_shapes=shapes, input_names=names,
                                    output_names=outputs, opset_version=18, verbose=False,
                                    optimize=False)
        return program.model_proto


def step_noise(steps: int, batch: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (steps, batch) + ((width,) if width else ())
    return rng.uniform(1e-5, 1 - 1e-5, shape).astype(np.float32)


@torch.no_grad()
def _run(vocoder: Vocoder, mels, prev=None, noise=None, sampler="icdf", index=0):
    cond = vocoder.time_major(vocoder.conditioning(torch.from_numpy(mels)))
    steps, batch = cond[0].shape[:2]
    h1 = torch.zeros(*vocoder.state_shape(batch))
    h2 = torch.zeros(*vocoder.state_shape(batch))
    x = torch.zeros(batch, 1)
    out = []
    for t in range(steps):
        if prev is not None:
            x = torch.from_numpy(prev[t]).unsqueeze(1)
        logits, h1, h2 = vocoder.step(x, *(c[t] for c in cond), h1, h2)
        if prev is not None:
            out.append(logits)
            continue
        u = torch.from_numpy(noise[t]) if noise is not None else None  # None: argmax
        sample = _sample(vocoder, logits, u if u is None or u.dim() == 2 else u.unsqueeze(1), sampler, index)
        out.append(sample)
        x = sample.unsqueeze(1)
    return torch.stack(out).numpy()


def _sample(vocoder, logits, u, sampler, index):
    if vocoder.mode == "raw" and sampler == "argmax":
        return 2.0 * torch.argmax(logits, dim=1).float() / (vocoder.classes - 1.0) - 1.0
    if vocoder.mode == "raw":
        cdf = torch.cumsum(torch.softmax(logits, dim=1), dim=1)
        c = (cdf < u[:, index:index + 1]).sum(dim=1).clamp(max=vocoder.classes - 1)
        return 2.0 * c.float() / (vocoder.classes - 1.0) - 1.0
    probs, means, scales = logits[:, :MOL_K], logits[:, MOL_K:2 * MOL_K], logits[:, 2 * MOL_K:]
    if sampler == "gumbel":  # coqui / fatchord: argmax(logit - log(-log(u_k)))
        k = torch.argmax(probs - torch.log(-torch.log(u[:, :MOL_K])), dim=1, keepdim=True)
        v = u[:, MOL_K]
    else:
        cdf = torch.cumsum(torch.softmax(probs, dim=1), dim=1)
        k = (cdf < u[:, :1]).sum(dim=1, keepdim=True).clamp(max=MOL_K - 1)
        v = u[:, 1]
    mean = means.gather(1, k).squeeze(1)
    log_scale = scales.gather(1, k).squeeze(1).clamp(min=LOG_SCALE_MIN)
    x = mean + torch.exp(log_scale) * (torch.log(v) - torch.log(1.0 - v))
    return x.clamp(min=-1.0).clamp(max=1.0)


def reference_logits(vocoder: Vocoder, mels: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """Teacher-forced logits [T, B, C] for previous samples [T, B]."""
    return _run(vocoder, mels, prev=prev)


def reference_samples(vocoder: Vocoder, mels: np.ndarray, noise: np.ndarray, sampler: str = "icdf",
                      index: int = 0) -> np.ndarray:
    """Free-running samples [T, B] from noise [T, B(, k)] (None for ``sampler="argmax"``)."""
    return _run(vocoder, mels, noise=noise, sampler=sampler, index=index)
