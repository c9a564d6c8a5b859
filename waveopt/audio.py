"""Audio in: read a WAV/FLAC file and compute the mels a fatchord WaveRNN was trained on.

fatchord's analysis (``utils/dsp.py`` with ``hparams.py``), step by step::

    y [samples] (mono float, 22,050 Hz)
      -> |STFT|: n_fft 2048, hop 275, win 1100, Hann, centred (frames padded by reflection)
      -> librosa mel filterbank on the magnitude: 80 bands from fmin 40 Hz to sr / 2 (Slaney)
      -> dB: 20 * log10(max(1e-5, x))
      -> [0, 1]: clip((dB - min_level_db) / -min_level_db, 0, 1), min_level_db = -100
    mels [80, 1 + samples // 275] float32

For a waveopt model, :meth:`MelAnalysis.for_model` takes the sample rate, hop and band count
from the model's metadata and keeps fatchord's values for the rest.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

# Both imported at the top: ``import librosa`` costs ~15 ms (lazy_loader defers its submodules;
# numba and scipy load at the first STFT, ~1-8 s, paid only by commands that analyse audio),
# and soundfile is a thin cffi wrapper around libsndfile (tens of ms).
import librosa
import numpy as np
import onnx
import soundfile

from .errors import WaveoptError
from .model_info import wavernn_info

__all__ = ["MelAnalysis", "FATCHORD", "load_audio", "mel_from_audio", "mels_from_file", "check_mel_scale"]


@dataclasses.dataclass(frozen=True)
class MelAnalysis:
    """The analysis parameters; the defaults are fatchord's ``hparams.py``."""

    sample_rate: int = 22050
    n_mels: int = 80
    n_fft: int = 2048
    hop_length: int = 275
    win_length: int = 1100
    fmin: float = 40.0
    min_level_db: float = -100.0

    @classmethod
    def for_model(cls, model: onnx.ModelProto) -> MelAnalysis:
        """fatchord's analysis at the sample rate, hop and mel bands of a waveopt export."""
        info = wavernn_info(model)
        if info is None:
            raise WaveoptError("the model carries no waveopt WaveRNN metadata (sample rate, hop); "
                               "cannot choose the mel analysis for it")
        return cls(sample_rate=info.sample_rate, n_mels=info.feat_dims, hop_length=info.hop_length)


FATCHORD = MelAnalysis()


def load_audio(path: str | os.PathLike[str], sample_rate: int) -> np.ndarray:
    """Samples of an audio file (WAV, FLAC, ... what libsndfile reads): mono, float32, at ``sample_rate``.

    Channels are averaged; a file at another rate is resampled (librosa, soxr). A missing,
    unreadable or empty file raises :class:`WaveoptError` naming it.
    """
    path = Path(path)
    if not path.exists():
        raise WaveoptError(f"no such file: {path}")
    if path.is_dir():
        raise WaveoptError(f"{path} is a directory, not an audio file")
    try:
        data, file_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile.LibsndfileError, RuntimeError, ...: all mean "not audio"
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise WaveoptError(f"{path} is not a readable audio file ({reason})") from e
    if data.shape[0] == 0:
        raise WaveoptError(f"{path} holds no audio samples")
    y = data.mean(axis=1, dtype=np.float32)
    if file_rate != sample_rate:
        y = librosa.resample(y, orig_sr=file_rate, target_sr=sample_rate)
    return np.ascontiguousarray(y, dtype=np.float32)


def mel_from_audio(y: np.ndarray, analysis: MelAnalysis = FATCHORD) -> np.ndarray:
    """fatchord's [0, 1]-normalised log-mel spectrogram of mono samples: [n_mels, 1 + len // hop] float32."""
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise WaveoptError(f"expected mono samples [n], got shape {list(y.shape)}")
    if y.size <= analysis.n_fft // 2:  # the centred first frame reflects n_fft / 2 samples
        raise WaveoptError(f"audio too short: {y.size} samples, need more than {analysis.n_fft // 2} "
                           f"({analysis.n_fft // 2 / analysis.sample_rate * 1000:.0f} ms)")
    # fatchord used librosa < 0.10, whose STFT padded the centred frames by reflection.
    magnitude = np.abs(librosa.stft(y, n_fft=analysis.n_fft, hop_length=analysis.hop_length,
                                    win_length=analysis.win_length, pad_mode="reflect"))
    mel = librosa.feature.melspectrogram(S=magnitude, sr=analysis.sample_rate, n_fft=analysis.n_fft,
                                         n_mels=analysis.n_mels, fmin=analysis.fmin)
    db = 20.0 * np.log10(np.maximum(1e-5, mel))
    return np.clip((db - analysis.min_level_db) / -analysis.min_level_db, 0.0, 1.0).astype(np.float32)


def mels_from_file(path: str | os.PathLike[str], analysis: MelAnalysis = FATCHORD) -> np.ndarray:
    """:func:`mel_from_audio` of :func:`load_audio` at the analysis's sample rate."""
    return mel_from_audio(load_audio(path, analysis.sample_rate), analysis)


def check_mel_scale(mels: np.ndarray) -> str | None:
    """A warning when ``mels`` are not on fatchord's [0, 1] scale (raw dB, natural log...), else None."""
    mels = np.asarray(mels)
    if mels.size == 0:
        return None
    low, high = float(np.min(mels)), float(np.max(mels))
    if np.isfinite(low) and np.isfinite(high) and low >= 0.0 and high <= 1.0:
        return None
    return (f"mels range from {low:.3g} to {high:.3g}; the model expects fatchord's [0, 1]-normalised "
            "log-mel (20*log10 magnitude, clip((dB + 100) / 100, 0, 1)), e.g. from `waveopt mels audio.wav`")

