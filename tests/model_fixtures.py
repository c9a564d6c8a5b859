"""Session-scoped PyTorch models and their ONNX exports, shared by the tests.

Small models for most tests; the odd-dimension model checks nothing assumes 16/32-aligned
or fatchord-default sizes. Exports are cached per (model, form, fold) for the session.
"""

from __future__ import annotations

import onnx
import pytest

torch = pytest.importorskip("torch")

from waveopt.models import HParams, demo_model, export_wavernn  # noqa: E402

SMALL = dict(rnn_dims=64, fc_dims=48, res_out_dims=32, compute_dims=32, res_blocks=2)
# Odd sizes (issue: rnn 200, fc 136, aux 24, bits 10) and a non-default hop of 32.
ODD = dict(rnn_dims=200, fc_dims=136, res_out_dims=96, bits=10, compute_dims=32, res_blocks=2,
           upsample_factors=(4, 8), pad=1)

CONFIGS = {
    "raw": HParams(mode="raw", **SMALL),
    "mol": HParams(mode="mol", **SMALL),
    "odd": HParams(mode="raw", **ODD),
    "odd_mol": HParams(mode="mol", **ODD),
    "fatchord": HParams(mode="raw"),  # the default, fatchord-size model: for the few tests that need it
}

_models: dict = {}
_exports: dict = {}


def get_model(name: str):
    if name not in _models:
        _models[name] = demo_model(CONFIGS[name], seed=1)
    return _models[name]


def get_export(name: str, teacher_forced: bool = False, fold=None):
    key = (name, teacher_forced, fold)
    if key not in _exports:
        _exports[key] = export_wavernn(get_model(name), teacher_forced=teacher_forced, fold=fold)
    return _exports[key]


@pytest.fixture(scope="session")
def models():
    return get_model


@pytest.fixture(scope="session")
def exports():
    return get_export


@pytest.fixture(scope="session")
def raw_path(tmp_path_factory, exports):
    """The small RAW export as a file, saved once for the session's CLI tests (read it; write
    elsewhere)."""
    path = tmp_path_factory.mktemp("raw_model") / "raw.onnx"
    onnx.save(exports("raw"), path)
    return path
