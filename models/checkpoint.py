"""Load a fatchord WaveRNN checkpoint, reading its hyperparameters off the weights' shapes."""

from __future__ import annotations

import math
import os
import re

import torch

from ..errors import WaveoptError
from .wavernn import MOL_MIXTURES, HParams, WaveRNN

__all__ = ["load_checkpoint", "hparams_from_state_dict"]

# fatchord saves a bare state_dict; some training scripts wrap it.
_WRAPPER_KEYS = ("model_state", "state_dict", "model")


def load_checkpoint(path: str | os.PathLike, **overrides) -> WaveRNN:
    """A WaveRNN with the checkpoint's weights, loaded with ``strict=True``.

    Hyperparameters come from the weights (layer sizes, bits or MOL, upsample factors,
    pad); ``overrides`` set the ones weights cannot tell (``sample_rate``, ``mu_law``).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WaveoptError(f"no such checkpoint file: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a bad file
        raise WaveoptError(f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__})") from None
    state = _unwrap(obj, path)
    hp = hparams_from_state_dict(state, **overrides)
    model = WaveRNN(hp)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[1:2] or [str(exc)]
        raise WaveoptError(f"{path} does not fit a fatchord WaveRNN: {first[0].strip()}") from None
    return model.eval()


def _unwrap(obj, path: str) -> dict:
    if isinstance(obj, dict) and "rnn1.weight_hh_l0" not in obj:
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                return obj[key]
    if not isinstance(obj, dict) or "rnn1.weight_hh_l0" not in obj:
        raise WaveoptError(f"{path} holds no fatchord WaveRNN state_dict (no 'rnn1.weight_hh_l0')")
    return obj


def hparams_from_state_dict(state: dict, **overrides) -> HParams:
    """fatchord hyperparameters implied by a state_dict's tensor shapes."""
    try:
        n_classes = state["fc3.weight"].shape[0]
        conv_in = state["upsample.resnet.conv_in.weight"]
        blocks = {int(m.group(1)) for k in state if (m := re.match(r"upsample\.resnet\.layers\.(\d+)\.", k))}
        up_convs = sorted(
            (int(m.group(1)), v.shape[-1]) for k, v in state.items()
            if (m := re.match(r"upsample\.up_layers\.(\d+)\.weight$", k))
        )
        found = dict(
            mode="mol" if n_classes == 3 * MOL_MIXTURES else "raw",
            bits=int(round(math.log2(n_classes))) if n_classes != 3 * MOL_MIXTURES else 9,
            rnn_dims=state["rnn1.weight_hh_l0"].shape[1],
            fc_dims=state["fc1.weight"].shape[0],
            feat_dims=conv_in.shape[1],
            compute_dims=conv_in.shape[0],
            res_out_dims=state["upsample.resnet.conv_out.weight"].shape[0],
            res_blocks=len(blocks),
            pad=(conv_in.shape[-1] - 1) // 2,
            upsample_factors=tuple((k - 1) // 2 for _, k in up_convs),
        )
    except (KeyError, IndexError, AttributeError) as exc:
        raise WaveoptError(f"checkpoint lacks a fatchord WaveRNN tensor ({exc})") from None
    if found["mode"] == "raw" and 2 ** found["bits"] != n_classes:
        raise WaveoptError(f"fc3 has {n_classes} outputs: neither 2**bits (RAW) nor 30 (MOL)")
    found.update(overrides)
    return HParams(**found)
