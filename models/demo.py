"""The built-in demo model and demo mels: seeded, no download, activations like a trained model's.

A default-initialised WaveRNN is far from a trained one: its GRU gates sit near 0 (every
gate ~0.5) and its output distribution is almost uniform, so it would exercise neither
the saturating parts of sigmoid/tanh nor peaked softmax sampling. ``demo_model`` starts
from a seeded init and rescales, layer by layer, on the demo mels:

- each GRU's weights so that its gate pre-activations have standard deviation
  ``GATE_STD`` (1.5): gates spread over (0.1, 0.9), few saturated (|pre| > 4), few
  vanishing (|pre| < 0.05) — :func:`gate_statistics` measures it and a test checks it;
- the conditioning network's batch norms get the running statistics of the demo mels;
- ``fc3`` so that the logits' spread per step gives a peaked distribution (RAW: a few
  dozen likely classes of 512, like a trained 9-bit model on speech).
"""

from __future__ import annotations

import math

import torch

from ..demo_data import demo_mels, demo_prev_samples
from .threads import one_torch_thread
from .wavernn import HParams, WaveRNN

__all__ = ["demo_model", "demo_mels", "demo_prev_samples", "gate_statistics", "GATE_STD"]

GATE_STD = 1.5
LOGIT_STD = 4.0


@torch.no_grad()
@one_torch_thread()
def demo_model(hp: HParams | None = None, seed: int = 0, calibration_frames: int = 6, **overrides) -> WaveRNN:
    """A seeded WaveRNN whose activations look trained (see the module docstring)."""
    torch.manual_seed(seed)
    model = WaveRNN(hp, **overrides).eval()
    hp = model.hp
    mels = torch.from_numpy(demo_mels(calibration_frames, batch=4, feat_dims=hp.feat_dims, seed=seed))
    _calibrate_batch_norms(model, mels)
    prev = torch.from_numpy(demo_prev_samples(calibration_frames * hp.hop_length, batch=4, seed=seed))
    for _ in range(6):  # damped: a larger state feeds back into larger pre-activations
        for gru in (model.rnn1, model.rnn2):
            stats = gate_statistics(model, mels, prev)[_name(model, gru)]
            scale = math.sqrt(GATE_STD / max(stats["std"], 1e-6))
            for p in (gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0):
                p.mul_(scale)
    logits = model.teacher_forced_logits(mels, prev)
    spread = logits.std(dim=-1).mean() if hp.mode == "raw" else logits[..., :10].std(dim=-1).mean()
    model.fc3.weight.mul_(LOGIT_STD / float(spread))
    model.fc3.bias.mul_(LOGIT_STD / float(spread))
    return model


def _name(model: WaveRNN, gru) -> str:
    return "rnn1" if gru is model.rnn1 else "rnn2"


@torch.no_grad()
def _calibrate_batch_norms(model: WaveRNN, mels: torch.Tensor) -> None:
    """Give every BatchNorm of the conditioning network the statistics of the demo mels."""
    bns = [m for m in model.upsample.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    for bn in bns:
        bn.weight.uniform_(0.8, 1.2)
        bn.bias.uniform_(-0.1, 0.1)
    # One pass in training mode with momentum 1 sets running stats to the batch's own.
    saved = [bn.momentum for bn in bns]
    model.upsample.train()
    for bn in bns:
        bn.momentum = 1.0
    model.condition(mels)
    for bn, momentum in zip(bns, saved):
        bn.momentum = momentum
    model.eval()


@torch.no_grad()
def gate_statistics(model: WaveRNN, mels: torch.Tensor, prev_samples: torch.Tensor) -> dict:
    """Per GRU: std of all gate pre-activations and the fractions saturated (|pre| > 4)
    and vanishing (|pre| < 0.05), measured in a teacher-forced pass.
    """
    captured = {}

    def hook(name):
        def capture(module, args, output):
            captured[name] = (args[0], output[0])
        return capture

    handles = [model.rnn1.register_forward_hook(hook("rnn1")), model.rnn2.register_forward_hook(hook("rnn2"))]
    try:
        model.teacher_forced_logits(mels, prev_samples)
    finally:
        for h in handles:
            h.remove()
    stats = {}
    for name, gru in (("rnn1", model.rnn1), ("rnn2", model.rnn2)):
        x, h = captured[name]  # [B, T, in], [B, T, H]
        h_prev = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], dim=1)
        gi = x @ gru.weight_ih_l0.T + gru.bias_ih_l0
        gh = h_prev @ gru.weight_hh_l0.T + gru.bias_hh_l0
        i_r, i_z, i_n = gi.chunk(3, dim=-1)
        h_r, h_z, h_n = gh.chunk(3, dim=-1)
        pre_r, pre_z = i_r + h_r, i_z + h_z
        pre_n = i_n + torch.sigmoid(pre_r) * h_n
        pre = torch.cat([pre_r, pre_z, pre_n], dim=-1)
        stats[name] = {
            "std": float(pre.std()),
            "saturated": float((pre.abs() > 4).float().mean()),
            "vanishing": float((pre.abs() < 0.05).float().mean()),
        }
    return stats


def entropy_bits(logits: torch.Tensor) -> float:
    """Mean entropy (bits) of softmax(logits) over the last axis."""
    logp = torch.log_softmax(logits, dim=-1)
    return float(-(logp.exp() * logp).sum(-1).mean() / math.log(2))
