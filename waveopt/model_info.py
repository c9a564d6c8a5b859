"""What a waveopt-exported model is, read from its metadata, and inputs that fit it."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx

from .demo_data import demo_mels, demo_prev_samples, uniform_noise
from .errors import InvalidModel, WaveoptError
from .folding import fold_count

__all__ = ["WaveRNNInfo", "wavernn_info", "example_inputs", "METADATA_KEYS", "HPARAM_TYPES"]


@dataclasses.dataclass(frozen=True)
class WaveRNNInfo:
    """The facts of an exported WaveRNN that its inputs and outputs depend on."""

    mode: str
    form: str  # "free_running" or "teacher_forced"
    hparams: dict
    fold: tuple[int, int] | None

    @property
    def hop_length(self) -> int:
        return int(np.prod(self.hparams["upsample_factors"]))

    @property
    def feat_dims(self) -> int:
        return int(self.hparams["feat_dims"])

    @property
    def sample_rate(self) -> int:
        return int(self.hparams["sample_rate"])

    @property
    def teacher_forced(self) -> bool:
        return self.form == "teacher_forced"

    def loop_shape(self, frames: int, batch: int) -> tuple[int, int]:
        """(steps, sequences) of the Loop for mels [batch, feat, frames]."""
        total = frames * self.hop_length
        if self.fold is None:
            return total, batch
        target, overlap = self.fold
        return target + 2 * overlap, fold_count(total, target, overlap)

    def wave_length(self, frames: int) -> int:
        return (frames - 1) * self.hop_length


def wavernn_info(model: onnx.ModelProto) -> WaveRNNInfo | None:
    """The metadata our exporter writes, or None for a model from elsewhere (no ``waveopt.kind``).

    Metadata that is there but does not fit the schema (:data:`METADATA_KEYS`,
    :data:`HPARAM_TYPES`) raises :class:`~waveopt.errors.InvalidModel` naming the key.
    """
    meta = {p.key: p.value for p in model.metadata_props}
    if "waveopt.kind" not in meta:
        return None
    if meta["waveopt.kind"] != "wavernn":
        raise InvalidModel(f"metadata waveopt.kind is {_show(meta['waveopt.kind'])}, expected 'wavernn'")
    missing = [k for k in METADATA_KEYS if k not in meta]
    if missing:
        raise InvalidModel(f"waveopt metadata lacks {', '.join(missing)}")
    hparams = _hparams(_json(meta, "waveopt.hparams"))
    mode, form = meta["waveopt.mode"], meta["waveopt.form"]
    if mode not in ("raw", "mol") or mode != hparams["mode"]:
        raise InvalidModel(f"metadata waveopt.mode is {_show(mode)}; expected the hparams' mode "
                           f"{_show(hparams['mode'])} ('raw' or 'mol')")
    if form not in ("free_running", "teacher_forced"):
        raise InvalidModel(f"metadata waveopt.form is {_show(form)}, expected 'free_running' or 'teacher_forced'")
    fold = None
    if "waveopt.fold" in meta:
        fold = _json(meta, "waveopt.fold")
        if not isinstance(fold, dict) or not all(_count(1, 1 << 24)(fold.get(k)) for k in ("target", "overlap")):
            raise InvalidModel(f"metadata waveopt.fold is {_show(meta['waveopt.fold'])}; expected "
                               '{"target": N, "overlap": M} with positive integers')
        fold = (fold["target"], fold["overlap"])
    return WaveRNNInfo(mode=mode, form=form, hparams=hparams, fold=fold)


# The keys our exporter always writes (waveopt.fold only for folded models), and the
# hyperparameters in waveopt.hparams: name -> (check, what it must be). All are required.
METADATA_KEYS = ("waveopt.kind", "waveopt.mode", "waveopt.form", "waveopt.hparams")


def _count(low: int, high: int):
    """A check for an integer in [low, high] (JSON true/false are not integers)."""
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


_DIM = (_count(1, 1 << 16), "an integer in [1, 65536]")
HPARAM_TYPES = {
    "mode": (lambda v: v in ("raw", "mol"), "'raw' or 'mol'"),
    "bits": (_count(1, 16), "an integer in [1, 16]"),
    "rnn_dims": _DIM,
    "fc_dims": _DIM,
    "feat_dims": _DIM,
    "compute_dims": _DIM,
    "res_out_dims": (lambda v: _count(4, 1 << 16)(v) and v % 4 == 0, "a multiple of 4 in [4, 65536]"),
    "res_blocks": (_count(0, 1 << 10), "an integer in [0, 1024]"),
    "pad": (_count(0, 1 << 10), "an integer in [0, 1024]"),
    "upsample_factors": (lambda v: isinstance(v, list) and 0 < len(v) <= 8 and all(map(_count(1, 1 << 10), v))
                         and int(np.prod(v)) <= 1 << 16,
                         "a list of positive integers whose product (the hop) is at most 65536"),
    "sample_rate": (_count(1, 1 << 22), "a positive integer (Hz)"),
    "mu_law": (lambda v: isinstance(v, bool), "true or false"),
}


def _hparams(value) -> dict:
    if not isinstance(value, dict):
        raise InvalidModel(f"metadata waveopt.hparams is {_show(value)}, expected a JSON object")
    for key, (ok, expected) in HPARAM_TYPES.items():
        if key not in value:
            raise InvalidModel(f"metadata waveopt.hparams lacks {key!r}")
        if not ok(value[key]):
            raise InvalidModel(f"metadata waveopt.hparams[{key!r}] is {_show(value[key])}, expected {expected}")
    return value


def _json(meta: dict, key: str):
    try:
        return json.loads(meta[key])
    except ValueError:
        raise InvalidModel(f"metadata {key} is not JSON: {_show(meta[key])}") from None


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def example_inputs(model: onnx.ModelProto, frames: int = 4, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs for a waveopt WaveRNN export: demo mels and noise (or previous samples)."""
    info = wavernn_info(model)
    if info is None:
        raise WaveoptError("the model carries no waveopt WaveRNN metadata; give its inputs explicitly")
    if info.fold is not None:
        batch = 1
    mels = demo_mels(frames, batch=batch, feat_dims=info.feat_dims, seed=seed)
    steps, sequences = info.loop_shape(frames, batch)
    if info.teacher_forced:
        return {"mels": mels, "prev_samples": demo_prev_samples(steps, sequences, seed=seed)}
    return {"mels": mels, "noise": uniform_noise(steps, sequences, seed=seed)}
