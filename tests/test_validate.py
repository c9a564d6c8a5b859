"""Models are validated once, before any work: each problem is one line naming it, exit 2.

The exports themselves are valid; each broken copy below gets ``error: invalid model: <what>``
from the commands that read models, with nothing written; ``--allow-invalid`` lets it
through, and what fails afterwards is still one clean line (ORT's own log silenced).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from cli_helpers import cli_captured
from waveopt.check import compare_models
from waveopt.demo_data import demo_mels
from waveopt.errors import InvalidModel, WaveoptError
from waveopt.graph import save_model
from waveopt.model_info import example_inputs, wavernn_info
from waveopt.pipeline import optimize
from waveopt.validate import check_noise, model_problem, validate_model


def copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def set_meta(model, key, value):
    meta = {p.key: p.value for p in model.metadata_props}
    if value is None:
        meta.pop(key)
    else:
        meta[key] = value
    del model.metadata_props[:]
    helper.set_model_props(model, meta)
    return model


def with_hparam(model, key, value):
    hparams = json.loads({p.key: p.value for p in model.metadata_props}["waveopt.hparams"])
    if value is ...:
        del hparams[key]
    else:
        hparams[key] = value
    return set_meta(model, "waveopt.hparams", json.dumps(hparams))


def with_trip_count(model, value):
    loop = next(n for n in model.graph.node if n.op_type == "Loop")
    model.graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), "fixed_trip_count"))
    loop.input[0] = "fixed_trip_count"
    return model


def renamed_input(model, old="mels", new="mel"):
    for graph in [model.graph, *(a.g for n in model.graph.node for a in n.attribute if a.HasField("g"))]:
        for node in graph.node:
            node.input[:] = [new if x == old else x for x in node.input]
    next(v for v in model.graph.input if v.name == old).name = new
    return model


def duplicated_node(model):
    model.graph.node.append(copy_node(model.graph.node[3]))
    return model


def copy_node(node):
    out = onnx.NodeProto()
    out.CopyFrom(node)
    return out


def body_output_dropped(model):
    loop = next(n for n in model.graph.node if n.op_type == "Loop")
    del next(a.g for a in loop.attribute if a.name == "body").output[-1]
    return model


BROKEN = {  # name -> (edit, what the one line must say)
    "hparams_not_json": (lambda m: set_meta(m, "waveopt.hparams", '{"bits": 9,'), "waveopt.hparams is not JSON"),
    "feat_dims_none": (lambda m: with_hparam(m, "feat_dims", None), "waveopt.hparams['feat_dims'] is None"),
    "no_sample_rate": (lambda m: with_hparam(m, "sample_rate", ...), "lacks 'sample_rate'"),
    "fold_without_overlap": (lambda m: set_meta(m, "waveopt.fold", '{"target": 8}'), "waveopt.fold"),
    "mode_mismatch": (lambda m: set_meta(m, "waveopt.mode", "mol"), "waveopt.mode is 'mol'"),
    "form_unknown": (lambda m: set_meta(m, "waveopt.form", "backwards"), "waveopt.form"),
    "no_form": (lambda m: set_meta(m, "waveopt.form", None), "lacks waveopt.form"),
    "trip_count_minus_1": (lambda m: with_trip_count(m, -1), "trip count is -1"),
    "renamed_input": (renamed_input, "no graph input 'mels'"),
    "duplicated_node": (duplicated_node, "onnx.checker"),
    "body_output_dropped": (body_output_dropped, "onnx.checker"),
    "opset_99": (lambda m: [setattr(o, "version", 99) for o in m.opset_import if o.domain == ""] and m,
                 "opset 99"),
}


@pytest.fixture(scope="module")
def raw(exports):
    return exports("raw")


def test_exports_are_valid(exports):
    for model in (exports("raw"), exports("mol"), exports("raw", teacher_forced=True)):
        assert model_problem(model) == ""


@pytest.mark.parametrize("name", BROKEN)
def test_broken_models_are_named(raw, name):
    edit, needle = BROKEN[name]
    with pytest.raises(InvalidModel) as info:
        validate_model(edit(copy(raw)))
    message = str(info.value)
    assert message.startswith("invalid model: ") and needle in message and "\n" not in message, message


def test_not_utf8_text_is_named(raw):
    model = copy(raw)
    data = bytearray(model.SerializeToString())
    key = b"pkg.torch" if b"pkg.torch" in data else b"waveopt.module"
    at = data.index(key)
    data[at] = 0xC9  # not a UTF-8 start byte followed by ASCII
    model = onnx.load_from_string(bytes(data))
    assert "not valid UTF-8" in model_problem(model)


@pytest.fixture(scope="module")
def folder(raw, tmp_path_factory):
    folder = tmp_path_factory.mktemp("validate")
    save_model(raw, folder / "raw.onnx")
    np.save(folder / "mels.npy", demo_mels(3, feat_dims=wavernn_info(raw).feat_dims)[0])
    for name, (edit, _) in BROKEN.items():
        save_model(edit(copy(raw)), folder / f"{name}.onnx")
    return folder


@pytest.mark.parametrize("name", ["feat_dims_none", "trip_count_minus_1", "renamed_input", "duplicated_node"])
@pytest.mark.parametrize("command", ["optimize", "vocode", "bench"])
def test_commands_refuse_invalid_models_in_one_line(folder, name, command, tmp_path):
    model = folder / f"{name}.onnx"
    before = model.read_bytes()
    out = tmp_path / ("out.wav" if command == "vocode" else "out.onnx")
    args = {"optimize": ["optimize", model, "-o", out, "--passes", "fold_linear"],
            "vocode": ["vocode", model, folder / "mels.npy", "-o", out],
            "bench": ["bench", model, "--frames", "2", "--repeats", "1"]}[command]
    code, _, err = cli_captured(*args)
    assert code == 2 and err.strip().splitlines() == [err.strip()] and err.startswith("error: invalid model: "), err
    assert BROKEN[name][1] in err
    assert model.read_bytes() == before and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, command", [("renamed_input", "vocode"), ("trip_count_minus_1", "vocode"),
                                           ("duplicated_node", "optimize"), ("body_output_dropped", "vocode")])
def test_allow_invalid_fails_in_one_clean_line(folder, name, command, tmp_path):
    """Past validation the model still breaks: one line, exit 2, no line of ORT's own log."""
    model = folder / f"{name}.onnx"
    out = tmp_path / "out"
    args = {"optimize": ["optimize", model, "-o", out, "--passes", "fold_linear", "--allow-invalid"],
            "vocode": ["vocode", model, folder / "mels.npy", "-o", out, "--allow-invalid"]}[command]
    code, _, err = cli_captured(*args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "onnxruntime" not in err.replace("ONNX Runtime", "") and "internal error" not in err
    assert list(tmp_path.iterdir()) == []


def test_allow_invalid_lets_a_model_through(folder, tmp_path):
    """A Loop trip count of -1 fails validation; past it, optimize's loop passes do their work."""
    out = tmp_path / "o.onnx"
    code, _, err = cli_captured("optimize", folder / "trip_count_minus_1.onnx", "-o", out,
                                "--passes", "split_concat_matmul", "--allow-invalid")
    assert code == 0, err
    assert out.exists()


def test_a_valid_model_passes(folder, tmp_path):
    code, _, err = cli_captured("vocode", folder / "raw.onnx", folder / "mels.npy", "-o", tmp_path / "a.wav")
    assert code == 0, err


# --- noise ------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [0.0, 1.0, -0.5, 2.0, np.nan])
def test_noise_outside_the_open_unit_interval_is_refused(value):
    noise = np.full((4, 1, 2), 0.5, np.float32)
    noise[2, 0, 1] = value
    with pytest.raises(WaveoptError, match=r"strictly inside \(0, 1\)"):
        check_noise(noise, "noise")
    check_noise(np.full((4, 1, 2), 0.5, np.float32), "noise")


def test_compare_models_refuses_bad_noise(raw):
    inputs = example_inputs(raw, frames=2)
    inputs["noise"] = inputs["noise"].copy()
    inputs["noise"][0, 0, 0] = 1.5
    with pytest.raises(WaveoptError, match="noise"):
        compare_models(raw, optimize(raw, passes=["fold_linear"]).model, inputs)
