"""The pass registry: names, presets, lookup."""

from __future__ import annotations

from waveopt.errors import WaveoptError
from waveopt.passes.base import WaveoptPass
from waveopt.passes.simplify import SimplifyPass

__all__ = ["PASSES", "PRESETS", "SimplifyPass", "WaveoptPass", "get_pass", "register"]

PASSES: dict[str, type[WaveoptPass]] = {}

PRESETS: dict[str, list[str]] = {
    "portable": ["simplify"],
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


register(SimplifyPass)
