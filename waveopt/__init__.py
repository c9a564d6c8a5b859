"""waveopt: export WaveRNN vocoders to ONNX and optimize them for ONNX Runtime on CPUs.

Library use::

    import waveopt
    result = waveopt.optimize(model)          # onnx.ModelProto or onnx_ir.Model
    waveopt.save_model(result.model, "out.onnx")
    sess = waveopt.session("out.onnx", threads=1)
    waveopt.ops.library_path()                # the native op library, for your own ORT sessions
    int8, accuracy, _ = waveopt.quantize(result.model, 8)   # calibrated and measured
"""

from waveopt import ops
from waveopt.check import CheckFailed, compare_models
from waveopt.errors import WaveoptError
from waveopt.graph import load_model, save_model
from waveopt.pipeline import OptimizeResult, PassReport, optimize
from waveopt.quant import quantize_checked as quantize
from waveopt.report import graph_stats
from waveopt.runtime import session

__all__ = [
    "optimize",
    "quantize",
    "OptimizeResult",
    "PassReport",
    "compare_models",
    "CheckFailed",
    "graph_stats",
    "load_model",
    "save_model",
    "session",
    "WaveoptError",
    "ops",
]

__version__ = "0.1.0"
