"""fatchord's fold arithmetic: how many overlapping folds a sequence of ``total`` steps makes.

One place decides it for the PyTorch reference (``models.wavernn.fold_with_overlap``), the
exported conditioning (``models.modules.Conditioning``, traced with symbolic lengths) and the
input shapes a folded model needs (``model_info.WaveRNNInfo.loop_shape``).
"""

from __future__ import annotations

__all__ = ["fold_count"]


def fold_count(total, target, overlap):
    """Folds of ``target + 2·overlap`` steps, ``target + overlap`` apart, that cover ``total`` steps.

    fatchord's ``fold_with_overlap`` count, ``ceil((total - overlap) / (target + overlap))``,
    except that a sequence of at most ``overlap`` steps (1 or 2 mel frames at fatchord's
    target 11000, overlap 550) makes one fold, not zero. Written with integer floor division
    only, so that it also works on torch's symbolic sizes while a model is traced (no
    ``max``, which would need a guard): ``c + 1 // (c + 1)`` adds 1 exactly when ``c == 0``;
    ``c`` is never negative for ``total >= 1`` because ``overlap < target + overlap``.
    """
    stride = target + overlap
    c = (total - overlap + stride - 1) // stride
    return c + 1 // (c + 1)
