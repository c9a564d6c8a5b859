"""Helpers of the quantize pass: per-column weight quantization, and what ONNX Runtime runs.

Private to ``waveopt.passes`` (the core reaches ``ort_loop_body_op_types`` through it).
"""

from __future__ import annotations

import collections
import os
import tempfile

import numpy as np
import onnx
import onnxruntime as ort

from waveopt.graph import iter_proto_nodes
from waveopt.runtime import session

__all__ = ["ort_loop_body_op_types", "quantize_columns"]


def quantize_columns(weight: np.ndarray, bits: int = 8, qmax: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-column quantization of a [K, N] weight: ``(q, scale)`` with
    ``weight ≈ q * scale``, zero point 0.

    ``scale[j] = max|W[:, j]| / qmax`` (qmax default 127 for 8 bits, so -128 is never used
    and the range is symmetric); values round to nearest (ties to even) and are clipped to
    ±qmax. An all-zero column gets scale 1 (its q is all 0). q is int8 for 8 bits, int16
    for 16.
    """
    qmax = float(2 ** (bits - 1) - 1 if qmax is None else qmax)
    w = np.asarray(weight, dtype=np.float64)
    peak = np.abs(w).max(axis=0) if w.shape[0] else np.zeros(w.shape[1])
    scale = np.where(peak > 0, peak / qmax, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale.astype(np.float64)), -qmax, qmax)
    return q.astype(np.int8 if bits == 8 else np.int16), scale


def ort_loop_body_op_types(model: onnx.ModelProto, level: str = "all") -> collections.Counter:
    """Op types ONNX Runtime (CPU) runs inside the Loop bodies of ``model`` after its graph
    optimizations, counted over every Loop body (nested ones included).

    ``level`` is "all" or "extended"; when ORT cannot save the model optimized at
    ORT_ENABLE_ALL (layout-specific rewrites are not serializable) it falls back to
    ORT_ENABLE_EXTENDED, where the quantization fusions live.
    """
    levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}
    order = ["all", "extended"] if level == "all" else [level]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        for i, name in enumerate(order):
            def save_optimized(options: ort.SessionOptions, name: str = name) -> None:
                options.graph_optimization_level = levels[name]
                options.optimized_model_filepath = path

            try:
                session(model, threads=1, configure=save_optimized)
                break
            except Exception:
                if i == len(order) - 1:
                    raise
        optimized = onnx.load(path)
    return collections.Counter(node.op_type for node, in_loop in iter_proto_nodes(optimized.graph) if in_loop)
