"""Base class of waveopt's passes: an onnx_ir in-place pass that also says what it did."""

from __future__ import annotations

import time
from typing import ClassVar

import onnx_ir as ir

from waveopt.passes._ir import remove_dead_initializers

__all__ = ["WaveoptPass"]

NOT_APPLICABLE = "not applicable"


class WaveoptPass(ir.passes.InPlacePass):
    """An in-place pass with a registry ``name`` and a one-line ``description``.

    After each call: ``modified``, a ``summary`` of what changed, the ``seconds`` taken. A
    call that changed the model also drops the initializers nothing reads any more (in every
    graph), so no pass leaves dead weights behind.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self) -> None:
        super().__init__()
        self.modified = False
        self.summary = "not run"
        self.seconds = 0.0

    def __call__(self, model_or_result: ir.Model | ir.passes.PassResult, /) -> ir.passes.PassResult:
        start = time.perf_counter()
        try:
            result = super().__call__(model_or_result)
        finally:
            self.seconds = time.perf_counter() - start
        self.modified = result.modified
        if result.modified:
            remove_dead_initializers(result.model)
        return result

    def result(self, model: ir.Model, changes: str = "", note: str = "") -> ir.passes.PassResult:
        """Finish a call. ``changes`` says what changed ("" when nothing did: "not
        applicable"); ``note`` adds what was skipped or failed, e.g. a tool's error."""
        if changes:
            self.summary = f"{changes}; {note}" if note else changes
        else:
            self.summary = f"{NOT_APPLICABLE} ({note})" if note else NOT_APPLICABLE
        return ir.passes.PassResult(model, modified=bool(changes))
