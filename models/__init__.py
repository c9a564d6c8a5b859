"""PyTorch reference models and the ONNX exporter (needs the `torch` extra)."""

from .demo import demo_mels, demo_model, demo_prev_samples, gate_statistics
from .export import export_step, export_wavernn
from .threads import one_torch_thread
from .wavernn import HParams, WaveRNN

__all__ = [
    "HParams",
    "WaveRNN",
    "demo_model",
    "demo_mels",
    "demo_prev_samples",
    "gate_statistics",
    "export_wavernn",
    "export_step",
    "one_torch_thread",
]
