"""The pass registry: every pass module in this package, by name, and the presets.

Each module ``passes/<name>.py`` defines one :class:`WaveoptPass` subclass (named in its
``__all__``); it is registered under its ``name`` when this package is imported.
"""

from __future__ import annotations

import importlib
import pkgutil

from waveopt.errors import WaveoptError
from waveopt.passes.base import WaveoptPass

__all__ = ["LOOP_PASSES", "PASSES", "PRESETS", "WaveoptPass", "get_pass", "register"]

PASSES: dict[str, type[WaveoptPass]] = {}

# The loop passes reach a fixed point in this order: splitting exposes hoistable
# products, folding composes what hoisting left, a second hoist moves the folded parts.
LOOP_PASSES = ["split_concat_matmul", "hoist_aux_projections", "fold_linear", "hoist_aux_projections",
               "fuse_concat_matmul_relu"]

# Named pass lists, run in order. A name must be registered to be run.
PRESETS: dict[str, list[str]] = {
    # Standard ONNX ops only: runs in any ONNX Runtime.
    "portable": ["simplify", *LOOP_PASSES, "pad_dims", "simplify"],
    # The WaveRNN Loop becomes waveopt.ops::WaveRNNLoop (lower_native does its own hoisting
    # and folding); the loop passes then tidy whatever stays in standard ops.
    "native": ["simplify", "lower_native", *LOOP_PASSES, "simplify"],
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


def _discover() -> None:
    """Import every pass module here and register the pass classes it exports."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for attr in getattr(module, "__all__", ()):
            obj = getattr(module, attr)
            if isinstance(obj, type) and issubclass(obj, WaveoptPass) and obj.name:
                register(obj)
                globals()[attr] = obj
                __all__.append(attr)


_discover()
