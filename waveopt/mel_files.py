"""Reading a mel spectrogram file: the one loader of ``vocode`` and ``optimize --calibrate``.

A ``.npy`` array, or an ``.npz`` holding one array or a ``mels`` array, shaped
``[feat, frames]`` or ``[batch, feat, frames]``, any float dtype. Anything else is a
:class:`WaveoptError` that names the file and what is wrong with it, in the user's terms
(the shape as stored in the file, not as reshaped here).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from waveopt.errors import WaveoptError
from waveopt.model_info import WaveRNNInfo

__all__ = ["load_mels", "read_mel_array", "NPZ_KEY"]

NPZ_KEY = "mels"  # the array an .npz of several arrays must name


def read_mel_array(path: Path) -> np.ndarray:
    """The array stored in ``path`` (.npy, or .npz with one array or a ``mels`` key), unchecked."""
    path = Path(path)
    if not path.is_file():
        raise WaveoptError(f"no such mel file: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise WaveoptError(f"{path} is not a readable .npy or .npz array ({type(exc).__name__})") from None
    if isinstance(data, np.ndarray):
        return data
    with data:
        names = list(data.files)
        if NPZ_KEY in names:
            name = NPZ_KEY
        elif len(names) == 1:
            name = names[0]
        else:
            held = ", ".join(repr(n) for n in names) or "no arrays"
            raise WaveoptError(f"{path} holds {held}; an .npz of mels must hold one array or one named "
                               f"{NPZ_KEY!r}")
        try:
            return data[name]
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise WaveoptError(f"array {name!r} in {path} is not readable ({type(exc).__name__})") from None


def load_mels(path: Path, info: WaveRNNInfo) -> np.ndarray:
    """A [B, feat, frames] float32 array for the model ``info`` describes, or a WaveoptError."""
    stored = read_mel_array(path)
    shape = list(stored.shape)
    if not np.issubdtype(stored.dtype, np.floating):
        raise WaveoptError(f"mels in {path} have dtype {stored.dtype}; expected float32 (or another float)")
    if stored.ndim not in (2, 3) or stored.shape[-2] != info.feat_dims:
        raise WaveoptError(f"mels in {path} have shape {shape}; expected "
                           f"[{info.feat_dims}, frames] or [batch, {info.feat_dims}, frames]")
    mels = stored[None] if stored.ndim == 2 else stored
    if mels.shape[2] < 2:
        raise WaveoptError(f"mels in {path} have shape {shape}: {mels.shape[2]} frame(s); at least 2 are needed")
    if info.fold is not None and mels.shape[0] != 1:
        raise WaveoptError(f"this model folds one utterance into a batch; mels in {path} (shape {shape}) "
                           f"hold {mels.shape[0]}")
    if not np.all(np.isfinite(mels)):
        raise WaveoptError(f"mels in {path} contain NaN or infinite values")
    return np.ascontiguousarray(mels, dtype=np.float32)
