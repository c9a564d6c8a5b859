"""What every command checks about the files it writes: outputs never overwrite an input
or an existing file unless ``--force``, and their folder exists."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Optional

import numpy as np

from waveopt.errors import WaveoptError
from waveopt.graph import atomic_write_bytes

__all__ = ["parse_names", "refuse_overwrite", "write_npy"]


def refuse_overwrite(output: Path, inputs: list[Path], force: bool, existing: bool = True) -> None:
    """Refuse to write ``output`` over one of ``inputs`` (or, with ``existing``, over any
    existing file) without ``force``, into a directory, or into a missing folder."""
    for path in inputs:
        if path.exists() and output.exists() and os.path.samefile(path, output) and not force:
            raise WaveoptError(f"output {output} is the input file; refusing to overwrite it (use --force)")
    if output.is_dir():
        raise WaveoptError(f"output {output} is a directory")
    if not output.parent.exists() and str(output.parent) not in ("", "."):
        raise WaveoptError(f"output folder {output.parent} does not exist")
    if existing and output.exists() and not force:
        raise WaveoptError(f"output {output} exists (use --force to overwrite)")


def parse_names(text: Optional[str]) -> Optional[list[str]]:
    """Comma-separated names (``--passes a,b``), or None when the option was not given."""
    return [n.strip() for n in text.split(",") if n.strip()] if text is not None else None


def write_npy(path: Path, array: np.ndarray) -> None:
    """``array`` as an .npy file, written atomically."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write_bytes(path, buffer.getvalue())
