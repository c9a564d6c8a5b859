"""What a waveopt-exported model is, read from its metadata, and inputs that fit it."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx

from .demo_data import demo_mels, demo_prev_samples, uniform_noise
from .errors import WaveoptError
from .folding import fold_count

__all__ = ["WaveRNNInfo", "wavernn_info", "example_inputs"]


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
    """The metadata our exporter writes, or None for a model from elsewhere."""
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get("waveopt.kind") != "wavernn":
        return None
    fold = json.loads(meta["waveopt.fold"]) if "waveopt.fold" in meta else None
    return WaveRNNInfo(
        mode=meta.get("waveopt.mode", "raw"),
        form=meta.get("waveopt.form", "free_running"),
        hparams=json.loads(meta["waveopt.hparams"]),
        fold=(int(fold["target"]), int(fold["overlap"])) if fold else None,
    )


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
