"""How far a quantized model's output is from the float32 one's: the measures of the guard.

- ``logit_snr_db``: signal-to-noise ratio of teacher-forced logits. Each step's logits are
  centred first (softmax ignores a constant shift, which would otherwise count as signal).
- ``class_agreement``: RAW, the share of steps whose most likely class is the same.
- ``sample_agreement``: MOL, the share of steps whose sampled value (same noise, the
  reference sampler) differs by at most ``tolerance``.
- ``log_mel_distance``: mean over frames of the RMS difference, over mel bands, of the two
  waveforms' log-mel spectra in dB; for free-running audio from the same noise, where the
  samples themselves soon differ but their spectra should not.
"""

from __future__ import annotations

import numpy as np

from waveopt.passes import reference_sample

__all__ = ["class_agreement", "log_mel", "log_mel_distance", "logit_powers", "logit_snr_db", "sample_agreement",
           "snr_db"]

MOL_TOLERANCE = 2.0 ** -7  # within 1/256 of the full scale [-1, 1]


def logit_snr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """10·log10(Σ ref² / Σ (ref - cand)²) over step-centred logits [..., classes]."""
    return snr_db(*logit_powers(reference, candidate))


def logit_powers(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    """(Σ ref², Σ (ref - cand)²) over step-centred logits: to sum over several runs."""
    ref = _centred(reference)
    return float(np.sum(ref ** 2)), float(np.sum((ref - _centred(candidate)) ** 2))


def snr_db(signal: float, noise: float) -> float:
    return float("inf") if noise == 0.0 else 10.0 * float(np.log10(signal / noise))


def class_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Share of steps with the same argmax class."""
    return float(np.mean(reference.argmax(-1) == candidate.argmax(-1)))


def sample_agreement(reference: np.ndarray, candidate: np.ndarray, noise: np.ndarray, mode: str,
                     tolerance: float = MOL_TOLERANCE) -> float:
    """Share of steps whose sampled values (same uniforms ``noise`` [..., 2]) agree within ``tolerance``."""
    classes = reference.shape[-1]
    u = noise.reshape(-1, 2).astype(np.float32)
    a = reference_sample(reference.reshape(-1, classes), u, mode)
    b = reference_sample(candidate.reshape(-1, classes), u, mode)
    return float(np.mean(np.abs(a - b) <= tolerance))


def log_mel(wave: np.ndarray, sample_rate: int, n_fft: int = 1024, hop: int = 256, n_mels: int = 80) -> np.ndarray:
    """Log-mel power spectrogram in dB, [frames, n_mels] (Hann window, HTK mel scale)."""
    wave = np.asarray(wave, dtype=np.float64).reshape(-1)
    if len(wave) < n_fft:
        wave = np.pad(wave, (0, n_fft - len(wave)))
    frames = 1 + (len(wave) - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spectrum = np.abs(np.fft.rfft(wave[index] * np.hanning(n_fft), axis=-1)) ** 2
    mel = spectrum @ _mel_filters(sample_rate, n_fft, n_mels).T
    return 10.0 * np.log10(np.maximum(mel, 1e-10))


def log_mel_distance(a: np.ndarray, b: np.ndarray, sample_rate: int) -> float:
    """Mean over frames of the RMS (over mel bands) log-mel difference, in dB."""
    ma, mb = log_mel(a, sample_rate), log_mel(b, sample_rate)
    n = min(len(ma), len(mb))
    return float(np.mean(np.sqrt(np.mean((ma[:n] - mb[:n]) ** 2, axis=-1))))


def _centred(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    return logits - logits.mean(-1, keepdims=True)


def _mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular filters [n_mels, n_fft // 2 + 1] on the HTK mel scale, 0 .. sample_rate / 2."""
    def to_mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def to_hz(m):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    edges = to_hz(np.linspace(0.0, to_mel(sample_rate / 2.0), n_mels + 2))
    freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lower) / np.maximum(centre - lower, 1e-9)
    falling = (upper - freqs) / np.maximum(upper - centre, 1e-9)
    return np.maximum(0.0, np.minimum(rising, falling))
