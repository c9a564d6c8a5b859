"""The pass registry: every pass by name, the presets, and the analyses the core uses.

Each module ``passes/<name>.py`` defines one :class:`WaveoptPass` subclass; it is
imported and registered here, by hand, so that grep follows every name.
"""

from __future__ import annotations

from waveopt.errors import WaveoptError
from waveopt.passes._analysis.errors import NotRecognised
from waveopt.passes._analysis.recurrence import match_wavernn_loop
from waveopt.passes._analysis.sampler import argmax_sample, gumbel_sample, reference_sample
from waveopt.passes._quant_ops import ort_loop_body_op_types
from waveopt.passes.base import WaveoptPass
from waveopt.passes.fold_linear import FoldLinearPass
from waveopt.passes.fuse_concat_matmul_relu import FuseConcatMatMulReluPass
from waveopt.passes.hoist_aux_projections import HoistAuxProjectionsPass
from waveopt.passes.lower_gru import LowerGruPass
from waveopt.passes.lower_native import LowerNativePass
from waveopt.passes.pad_dims import PadDimsPass
from waveopt.passes.quantize import QuantizePass
from waveopt.passes.simplify import SimplifyPass
from waveopt.passes.split_concat_matmul import SplitConcatMatMulPass

__all__ = [
    "LOOP_PASSES",
    "PASSES",
    "PRESETS",
    "FoldLinearPass",
    "FuseConcatMatMulReluPass",
    "HoistAuxProjectionsPass",
    "LowerGruPass",
    "LowerNativePass",
    "NotRecognised",
    "PadDimsPass",
    "QuantizePass",
    "SimplifyPass",
    "SplitConcatMatMulPass",
    "WaveoptPass",
    "get_pass",
    "match_wavernn_loop",
    "ort_loop_body_op_types",
    "reference_sample",
    "argmax_sample",
    "gumbel_sample",
    "register",
]

PASSES: dict[str, type[WaveoptPass]] = {}

# The loop passes reach a fixed point in this order: splitting exposes hoistable
# products, folding composes what hoisting left, a second hoist moves the folded parts.
LOOP_PASSES = ["split_concat_matmul", "hoist_aux_projections", "fold_linear", "hoist_aux_projections",
               "fuse_concat_matmul_relu"]

# Named pass lists, run in order. A name must be registered to be run.
PRESETS: dict[str, list[str]] = {
    # Standard ONNX ops only: runs in any ONNX Runtime. lower_gru first: one-step ONNX GRU
    # ops (nn.GRU exports) become the gate math every later pass reads.
    "portable": ["lower_gru", "simplify", *LOOP_PASSES, "pad_dims", "simplify"],
    # The WaveRNN Loop becomes waveopt.ops::WaveRNNLoop (lower_native does its own hoisting
    # and folding); the loop passes then tidy whatever stays in standard ops.
    "native": ["lower_gru", "simplify", "lower_native", *LOOP_PASSES, "simplify"],
}


def register(cls: type[WaveoptPass]) -> type[WaveoptPass]:
    """Add a pass class under its ``name``; usable as a class decorator."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if PASSES.get(cls.name, cls) is not cls:
        raise ValueError(f"a pass named {cls.name!r} is already registered")
    PASSES[cls.name] = cls
    return cls


def get_pass(name: str) -> type[WaveoptPass]:
    """The pass class registered as ``name``."""
    try:
        return PASSES[name]
    except KeyError:
        known = ", ".join(sorted(PASSES)) or "none"
        raise WaveoptError(f"unknown pass {name!r} (known passes: {known})") from None


for _cls in (FoldLinearPass, FuseConcatMatMulReluPass, HoistAuxProjectionsPass, LowerGruPass, LowerNativePass,
             PadDimsPass, QuantizePass, SimplifyPass, SplitConcatMatMulPass):
    register(_cls)
