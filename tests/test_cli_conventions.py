"""The CLI conventions users expect (issue 13): plain --help and -h, --version, optimize IN OUT,
list options, --json, --atol/--rtol/--check-inputs, one --frames/--batch, progress on stderr,
and ``ops triton-config``. Run as a user runs the CLI, on files in a temp dir."""

from __future__ import annotations

import json
import re
import time
import wave

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import typer

from cli_helpers import assert_one_line_error, cli
from onnx_builders import cnn_model
from waveopt import progress
from waveopt.check import DEFAULT_ATOL, DEFAULT_RTOL
from waveopt.cli import app
from waveopt.cli.common import expand_list_options
from waveopt.demo_data import demo_mels
from waveopt.model_info import example_inputs, wavernn_info
from waveopt.passes import PRESETS
from waveopt.quant import DEFAULT_MIN_SNR_DB
from waveopt.report import graph_stats


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("conventions")


# --- help -------------------------------------------------------------------------------------
def all_commands():
    """(words, click command) for every command and subcommand, read off the app itself."""
    found = []

    def walk(command, words):
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, [*words, name])
        found.append((words, command))

    walk(typer.main.get_command(app), [])
    return found


COMMANDS = all_commands()


def normalized(text: str) -> str:
    """Whitespace collapsed, and words the help's wrapping broke after a hyphen joined again."""
    return " ".join(re.sub(r"-\n\s+", "-", text).split())


@pytest.mark.parametrize("words, command", COMMANDS, ids=[" ".join(w) or "waveopt" for w, _ in COMMANDS])
def test_help_shows_every_option_as_written(capsys, words, command):
    code, out, err = cli(capsys, *words, "--help")
    assert code == 0 and not err, err
    code_h, out_h, _ = cli(capsys, *words, "-h")
    assert code_h == 0 and out_h == out  # -h is --help
    text = normalized(out)
    assert "<bool>" not in out  # flags are flags, not typed values
    usage = out.splitlines()[0]
    for param in getattr(command, "params", []):
        if param.hidden:
            assert param.name not in usage, usage  # no hidden argument in the usage line
            continue
        if param.help:  # verbatim: no markup ate brackets or words
            assert normalized(param.help) in text, param.help
        if getattr(param, "is_flag", False):
            name = max(param.opts, key=len)
            assert re.search(rf"{re.escape(name)}(,| +[^<\s])", out), name
        elif param.default not in (None, False, [], ()) and param.param_type_name == "option" \
                and not callable(param.default):
            assert f"[default: {param.default}]" in text, param.name  # defaults are shown
    for word in ("more_calibrate", "[more", "( float32)", "dB ."):
        assert word not in out


def test_help_keeps_brackets_and_shows_the_defaults(capsys):
    _, out, _ = cli(capsys, "vocode", "--help")
    assert "[feat, frames] or [1, feat, frames]" in normalized(out)
    _, out, _ = cli(capsys, "optimize", "--help")
    text = normalized(out)
    assert f"[default: {DEFAULT_MIN_SNR_DB}]" in text
    assert f"[default: {DEFAULT_ATOL}]" in text and f"[default: {DEFAULT_RTOL}]" in text
    assert out.splitlines()[0] == "Usage: waveopt optimize [OPTIONS] {MODEL} [OUTPUT]"


def test_version(capsys):
    code, out, _ = cli(capsys, "--version")
    assert code == 0
    import waveopt

    assert out.startswith(f"waveopt {waveopt.__version__} ") and f"onnxruntime {ort.__version__}" in out


# --- optimize IN OUT, list options -------------------------------------------------------------
def test_optimize_takes_the_output_as_a_second_argument(capsys, workdir, raw_path):
    out = workdir / "positional.onnx"
    code, stdout, err = cli(capsys, "optimize", raw_path, out, "--passes", "simplify")
    assert code == 0, err
    assert onnx.load(out).graph.node and f"-> {out}" in stdout
    code, _, err = cli(capsys, "optimize", raw_path, workdir / "a.onnx", "-o", workdir / "b.onnx")
    assert_one_line_error(code, err, "two outputs")
    assert not (workdir / "a.onnx").exists() and not (workdir / "b.onnx").exists()


def test_list_options_expand_repeats_and_the_documented_form():
    lists = {"--calibrate": (".npy", ".npz")}
    assert expand_list_options(["m.onnx", "--calibrate", "a.npy", "b.NPZ", "out.onnx", "--check"], lists) == \
        ["m.onnx", "--calibrate", "a.npy", "--calibrate", "b.NPZ", "out.onnx", "--check"]
    assert expand_list_options(["--calibrate=a.npy", "b.npy"], lists) == ["--calibrate=a.npy", "--calibrate", "b.npy"]
    # a word after another option is that option's, and "--" ends the expansion
    assert expand_list_options(["--calibrate", "a.npy", "--quant", "x.npy"], lists) == \
        ["--calibrate", "a.npy", "--quant", "x.npy"]
    assert expand_list_options(["--calibrate", "a.npy", "--", "b.npy"], lists) == ["--calibrate", "a.npy", "--", "b.npy"]


def test_calibrate_accepts_every_list_form(capsys, workdir, raw_path):
    files = []
    for i, frames in enumerate((3, 4, 5)):
        files.append(workdir / f"cal{i}.npy")
        np.save(files[-1], demo_mels(frames, seed=20 + i)[0])
    hop = wavernn_info(onnx.load(raw_path)).hop_length
    forms = [["--calibrate", files[0], files[1], files[2]],                     # the documented form
             ["--calibrate", files[0], "--calibrate", f"{files[1]},{files[2]}"]]  # repeated, comma list
    for i, form in enumerate(forms):
        out = workdir / f"q{i}.onnx"
        code, stdout, err = cli(capsys, "optimize", raw_path, *form, out, "--quant", "int8", "--force", "--json")
        assert code == 0, err
        data = json.loads(stdout)
        assert data["quantization"]["steps"] == (3 + 4 + 5) * hop  # all three files, and only them
        assert data["output"] == str(out) and out.exists()


# --- --json, --atol/--rtol, --check-inputs, --frames/--batch ---------------------------------------
def test_optimize_json_matches_the_written_model(capsys, workdir, raw_path):
    out = workdir / "portable.onnx"
    code, stdout, err = cli(capsys, "optimize", raw_path, "-o", out, "--check", "--frames", "3", "--batch", "2",
                            "--json")
    assert code == 0, err
    assert err == ""  # no progress lines with --json
    data = json.loads(stdout)
    assert [p["name"] for p in data["passes"]] == PRESETS["portable"]
    assert data["after"]["macs_per_step"] == graph_stats(onnx.load(out)).macs_per_step
    assert data["before"]["macs_per_step"] == graph_stats(onnx.load(raw_path)).macs_per_step
    assert data["check"]["ok"] and data["check"]["inputs"]["shapes"]["mels"] == [2, 80, 3]
    assert data["quantization"] is None


def test_tolerances_reach_the_check(capsys, workdir, exports):
    source = workdir / "tf.onnx"  # teacher-forced: per-step logits, compared by tolerance
    onnx.save(exports("raw", teacher_forced=True), source)
    out = workdir / "strict.onnx"
    # fold_linear reassociates float sums: the logits move by float noise, so zero tolerance fails
    code, _, err = cli(capsys, "optimize", source, "-o", out, "--check", "--frames", "2", "--atol", "0",
                       "--rtol", "0")
    assert_one_line_error(code, err, "outputs differ", "atol 0, rtol 0")
    assert not out.exists()
    code, stdout, err = cli(capsys, "optimize", source, "-o", out, "--check", "--frames", "2", "--atol", "1e-3",
                            "--json")
    assert code == 0, err
    assert json.loads(stdout)["check"]["atol"] == 1e-3
    code, _, err = cli(capsys, "optimize", source, "-o", workdir / "never.onnx", "--check", "--atol", "-1")
    assert_one_line_error(code, err, "--atol")


def test_check_inputs_are_the_users_arrays(capsys, workdir, raw_path):
    model = onnx.load(raw_path)
    feed = example_inputs(model, frames=3, seed=7)
    given = workdir / "inputs.npz"
    np.savez(given, **feed)
    out = workdir / "checked.onnx"
    code, stdout, err = cli(capsys, "optimize", raw_path, "-o", out, "--check", "--check-inputs", given, "--json")
    assert code == 0, err
    check = json.loads(stdout)["check"]
    assert check["ok"] and check["inputs"] == {"source": str(given),
                                               "shapes": {k: list(v.shape) for k, v in feed.items()}}
    bad = {"missing.npz": {"mels": feed["mels"]},
           "unknown.npz": {**feed, "extra": feed["mels"]},
           "dtype.npz": {**feed, "mels": feed["mels"].astype(np.float64)}}
    for name, arrays in bad.items():
        np.savez(workdir / name, **arrays)
        code, _, err = cli(capsys, "optimize", raw_path, "-o", workdir / "never.onnx", "--check",
                           "--check-inputs", workdir / name)
        assert_one_line_error(code, err, name)
    code, _, err = cli(capsys, "optimize", raw_path, "-o", workdir / "never.onnx", "--check-inputs", given)
    assert_one_line_error(code, err, "--check")
    assert not (workdir / "never.onnx").exists()


def test_bench_json_and_the_shape_options(capsys, workdir, raw_path):
    code, stdout, err = cli(capsys, "bench", raw_path, raw_path, "--frames", "3", "--batch", "2", "--repeats", "1",
                            "--warmup", "0", "--json")
    assert code == 0, err
    results = json.loads(stdout)
    info = wavernn_info(onnx.load(raw_path))
    steps, sequences = info.loop_shape(3, 2)
    assert len(results) == 2
    for r in results:
        assert (r["frames"], r["batch"], r["sequences"]) == (3, 2, 2)
        assert r["samples_per_second"] * r["median_seconds"] == pytest.approx(steps * sequences)
        # the one cost model: whole-model MACs per sample at these frames and batch
        assert r["macs_per_sample"] == round(graph_stats(onnx.load(raw_path), frames=3, batch=2).macs_per_sample)
    code, stdout, _ = cli(capsys, "bench", raw_path, "--frames", "2", "--repeats", "1", "--json")
    assert isinstance(json.loads(stdout), dict)  # one model: one object


def test_profile_takes_the_same_batch(capsys, raw_path):
    code, stdout, err = cli(capsys, "profile", raw_path, "--frames", "2", "--batch", "2", "--runs", "1",
                            "--skip-estimate", "--json")
    assert code == 0, err
    assert json.loads(stdout)["feed_shapes"]["mels"] == [2, 80, 2]


def test_vocode_json(capsys, workdir, raw_path):
    mels = workdir / "voc.npy"
    np.save(mels, demo_mels(4)[0])
    out = workdir / "voc.wav"
    code, stdout, err = cli(capsys, "vocode", raw_path, mels, "-o", out, "--json")
    assert code == 0, err
    data = json.loads(stdout)
    with wave.open(str(out)) as w:
        assert data["samples"] == w.getnframes() and data["sample_rate"] == w.getframerate()
    assert data["mels_shape"] == [1, 80, 4] and data["output"] == str(out)


# --- progress -----------------------------------------------------------------------------------
def test_progress_lines_go_to_stderr_and_quiet_silences_them(capsys, workdir, monkeypatch):
    monkeypatch.setattr(progress, "SHOW_AFTER_SECONDS", 0.0)
    monkeypatch.setenv("WAVEOPT_PROGRESS", "1")  # stderr is not a terminal here
    small = ["--rnn-dims", "32", "--fc-dims", "32", "--res-out-dims", "16", "--compute-dims", "16",
             "--res-blocks", "1"]
    code, out, err = cli(capsys, "export", "--demo", *small, "-o", workdir / "p.onnx")
    assert code == 0, err
    assert re.search(r"^\[\s*\d+\.\d s\] exporting with torch.onnx .*\.\.\.$", err, re.M), err
    assert re.search(r"exporting with torch.onnx .*: done in \d+\.\d s$", err, re.M), err
    assert "[" not in out.splitlines()[0] and "done in" not in out  # stdout: the report only
    code, out, err = cli(capsys, "export", "--demo", *small, "-o", workdir / "q.onnx", "--quiet")
    assert code == 0 and err == ""
    code, out, err = cli(capsys, "optimize", workdir / "p.onnx", "-o", workdir / "p.opt.onnx")
    assert code == 0 and "pass simplify ..." in err and " s] " not in out


def test_a_stage_shows_only_when_slow_and_says_nothing_when_it_fails(capsys, monkeypatch):
    monkeypatch.setattr(progress, "SHOW_AFTER_SECONDS", 0.2)
    with progress.reporting():
        with progress.stage("quick"):
            pass
        with pytest.raises(ValueError):
            with progress.stage("failing"):
                time.sleep(0.4)
                raise ValueError
    with progress.stage("not reporting"):  # outside reporting(): silent
        pass
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert captured.out == "" and len(lines) == 1 and lines[0].endswith("] failing ...")


# --- ops triton-config --------------------------------------------------------------------------
def triton_model_config_class():
    """The fields of Triton's ModelConfig (model_config.proto) the generated file uses, to parse it
    with protobuf's own text format parser."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    f = descriptor_pb2.FileDescriptorProto(name="triton_subset.proto", package="inference", syntax="proto3")
    data_type = f.enum_type.add(name="DataType")
    for i, name in enumerate(["TYPE_INVALID", "TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32",
                              "TYPE_UINT64", "TYPE_INT8", "TYPE_INT16", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16",
                              "TYPE_FP32", "TYPE_FP64", "TYPE_STRING", "TYPE_BF16"]):
        data_type.value.add(name=name, number=i)
    F = descriptor_pb2.FieldDescriptorProto
    optional, repeated = F.LABEL_OPTIONAL, F.LABEL_REPEATED

    def message(name, fields, nested=None):
        m = f.message_type.add(name=name) if nested is None else nested.nested_type.add(name=name)
        for number, (field, kind, label, type_name) in enumerate(fields, start=1):
            m.field.add(name=field, number=number, type=kind, label=label, type_name=type_name or None)
        return m

    tensor = [("name", F.TYPE_STRING, optional, None), ("data_type", F.TYPE_ENUM, optional, ".inference.DataType"),
              ("dims", F.TYPE_INT64, repeated, None)]
    message("ModelInput", tensor)
    message("ModelOutput", tensor)
    group = message("ModelInstanceGroup", [("count", F.TYPE_INT32, optional, None),
                                           ("kind", F.TYPE_ENUM, optional, ".inference.ModelInstanceGroup.Kind")])
    kind = group.enum_type.add(name="Kind")
    for i, name in enumerate(["KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL"]):
        kind.value.add(name=name, number=i)
    message("ModelParameter", [("string_value", F.TYPE_STRING, optional, None)])
    message("ModelOperations", [("op_library_filename", F.TYPE_STRING, repeated, None)])
    config = message("ModelConfig", [
        ("name", F.TYPE_STRING, optional, None), ("platform", F.TYPE_STRING, optional, None),
        ("backend", F.TYPE_STRING, optional, None), ("max_batch_size", F.TYPE_INT32, optional, None),
        ("input", F.TYPE_MESSAGE, repeated, ".inference.ModelInput"),
        ("output", F.TYPE_MESSAGE, repeated, ".inference.ModelOutput"),
        ("instance_group", F.TYPE_MESSAGE, repeated, ".inference.ModelInstanceGroup"),
        ("default_model_filename", F.TYPE_STRING, optional, None),
        ("parameters", F.TYPE_MESSAGE, repeated, ".inference.ModelConfig.ParametersEntry"),
        ("model_operations", F.TYPE_MESSAGE, optional, ".inference.ModelOperations")])
    entry = message("ParametersEntry", [("key", F.TYPE_STRING, optional, None),
                                        ("value", F.TYPE_MESSAGE, optional, ".inference.ModelParameter")], config)
    entry.options.map_entry = True
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


def parse_triton(text: str):
    from google.protobuf import text_format

    return text_format.Parse(text, triton_model_config_class()())


def test_triton_config_of_a_native_model(capsys, workdir, exports):
    import waveopt

    native = waveopt.optimize(exports("raw"), preset="native").model
    path = workdir / "wavernn.native.onnx"
    onnx.save(native, path)
    code, out, err = cli(capsys, "ops", "triton-config", path, "--library", "/opt/waveopt/libwaveopt_ops.so",
                         "--threads", "2")
    assert code == 0, err
    config = parse_triton(out)
    assert config.name == "wavernn_native" and config.backend == "onnxruntime" and config.max_batch_size == 0
    assert config.default_model_filename == "wavernn.native.onnx"
    assert list(config.model_operations.op_library_filename) == ["/opt/waveopt/libwaveopt_ops.so"]
    assert config.parameters["intra_op_thread_count"].string_value == "1"  # the ops' team does the work
    assert "WAVEOPT_THREADS=2" in out
    session = ort.InferenceSession(exports("raw").SerializeToString(), providers=["CPUExecutionProvider"])
    declared = {i.name: [d if isinstance(d, int) else -1 for d in i.shape] for i in session.get_inputs()}
    assert {i.name: list(i.dims) for i in config.input} == declared
    assert {i.name: i.data_type for i in config.input} == {"mels": 11, "noise": 11}  # TYPE_FP32
    assert [o.name for o in config.output] == [o.name for o in native.graph.output]

    from waveopt import ops

    code, out, err = cli(capsys, "ops", "triton-config", path, "-o", workdir / "config.pbtxt")
    assert code == 0, err
    default = parse_triton((workdir / "config.pbtxt").read_text())
    assert list(default.model_operations.op_library_filename) == [str(ops.library_path().resolve())]


def test_triton_config_without_native_ops_and_bad_input(capsys, workdir):
    cnn = workdir / "cnn.onnx"
    onnx.save(cnn_model(), cnn)
    code, out, err = cli(capsys, "ops", "triton-config", cnn, "--name", "cnn")
    assert code == 0, err
    config = parse_triton(out)
    assert config.name == "cnn" and not config.HasField("model_operations")
    code, _, err = cli(capsys, "ops", "triton-config", workdir / "missing.onnx")
    assert_one_line_error(code, err, "missing.onnx")
    code, _, err = cli(capsys, "ops", "triton-config", cnn, "--name", 'a"b')
    assert_one_line_error(code, err, "--name")
