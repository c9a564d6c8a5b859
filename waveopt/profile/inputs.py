"""Inputs to profile a model with: demo mels and noise for a waveopt export, else made from its declared inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from waveopt.check import NOISE_INPUT_KEY
from waveopt.errors import WaveoptError
from waveopt.model_info import example_inputs, wavernn_info
from waveopt.validate import check_noise

__all__ = ["profile_inputs", "parse_dims", "load_npz_inputs"]


def profile_inputs(model: onnx.ModelProto, frames: int, dims: dict[str, int], given: Path | None = None,
                   seed: int = 0, batch: int = 1) -> tuple[dict[str, np.ndarray], str]:
    """(feed, one line saying where it came from).

    A waveopt export gets seeded demo mels of ``batch`` x ``frames`` frames and noise. Any other model
    gets the arrays of ``given`` (an .npz by input name) and, for inputs it lacks, seeded
    uniform [0, 1) floats (usable as noise), zero integers and true booleans shaped as
    declared, with symbolic dims from ``dims`` (1 when not given).
    """
    names = [i.name for i in _graph_inputs(model)]
    if given is None and wavernn_info(model) is not None:
        if frames < 2:
            raise WaveoptError("--frames must be at least 2")
        if batch < 1:
            raise WaveoptError("--batch must be at least 1")
        feed = example_inputs(model, frames=frames, batch=batch, seed=seed)
        return feed, f"demo mels {list(feed['mels'].shape)} and seeded noise"
    feed = load_npz_inputs(given, names) if given is not None else {}
    noise = {p.key: p.value for p in model.metadata_props}.get(NOISE_INPUT_KEY)
    if noise in feed:
        check_noise(feed[noise], f"{given}")
    unused = sorted(set(dims) - _symbolic_dims(model))
    if unused:
        raise WaveoptError(f"--dim {unused[0]}: the model's inputs have no dimension of that name "
                           f"(symbolic dims: {', '.join(sorted(_symbolic_dims(model))) or 'none'})")
    rng = np.random.default_rng(seed)
    made = []
    for value in _graph_inputs(model):
        if value.name not in feed:
            feed[value.name] = _make(value, dims, rng)
            made.append(f"{value.name} {list(feed[value.name].shape)}")
    source = f"{given}" if given is not None else ""
    if made:
        source += ("; " if source else "") + "made up: " + ", ".join(made)
    return feed, source


def parse_dims(items: list[str]) -> dict[str, int]:
    """``["steps=300", ...]`` -> {"steps": 300}."""
    dims = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip().isdigit() or int(value) < 1:
            raise WaveoptError(f"--dim takes NAME=N with N >= 1, got {item!r}")
        dims[name.strip()] = int(value)
    return dims


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def _symbolic_dims(model: onnx.ModelProto) -> set[str]:
    return {d.dim_param for i in _graph_inputs(model) if i.type.HasField("tensor_type")
            for d in i.type.tensor_type.shape.dim if d.dim_param}


def _make(value: onnx.ValueInfoProto, dims: dict[str, int], rng: np.random.Generator) -> np.ndarray:
    if not value.type.HasField("tensor_type"):
        raise WaveoptError(f"input {value.name!r} is not a tensor; give it with --inputs")
    tensor = value.type.tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
    shape = [d.dim_value if d.HasField("dim_value") else dims.get(d.dim_param, 1) for d in tensor.shape.dim]
    if np.issubdtype(dtype, np.floating):
        return rng.random(shape).astype(dtype)
    if dtype == np.bool_:
        return np.ones(shape, dtype=bool)
    if np.issubdtype(dtype, np.number):
        return np.zeros(shape, dtype=dtype)
    raise WaveoptError(f"input {value.name!r} has type {dtype}; give it with --inputs")


def load_npz_inputs(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    """The arrays of an .npz by input name; a name that is not in ``names`` is refused."""
    if not path.is_file():
        raise WaveoptError(f"no such inputs file: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:
        raise WaveoptError(f"{path} is not a readable .npz ({type(exc).__name__})") from None
    unknown = sorted(set(arrays) - set(names))
    if unknown:
        raise WaveoptError(f"{path} holds {unknown[0]!r}, which is not an input of the model "
                           f"(inputs: {', '.join(names)})")
    return arrays
