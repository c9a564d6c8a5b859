"""Every CLI command, and every bad input getting one clear line and exit code 2."""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnx_builders import cnn_model
from cli_helpers import assert_one_line_error, cli
from waveopt.cli import main
from waveopt.demo_data import demo_mels

SMALL_FLAGS = ["--rnn-dims", "32", "--fc-dims", "32", "--res-out-dims", "16", "--compute-dims", "16",
               "--res-blocks", "1"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def exported(workdir):
    """A small demo model exported through the CLI, shared by this module."""
    path = workdir / "small.onnx"
    assert main(["export", "--demo", *SMALL_FLAGS, "-o", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def mels_file(workdir):
    path = workdir / "mels.npy"
    np.save(path, demo_mels(6)[0])
    return path


# --- export ---------------------------------------------------------------------------------
def test_export_demo_writes_a_loop_model(exported):
    model = onnx.load(exported)
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node].count("Loop") == 1
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["waveopt.mode"] == "raw" and meta["waveopt.form"] == "free_running"


def test_export_checkpoint_round_trip(capsys, workdir, models):
    import torch

    checkpoint = workdir / "fatchord.pt"
    torch.save(models("mol").state_dict(), checkpoint)
    out = workdir / "from_ckpt.onnx"
    code, stdout, err = cli(capsys, "export", "--checkpoint", checkpoint, "-o", out, "--teacher-forced")
    assert code == 0, err
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert meta["waveopt.mode"] == "mol" and meta["waveopt.form"] == "teacher_forced"


@pytest.mark.parametrize("args, needle", [
    ([], "exactly one of"),
    (["--demo", "--checkpoint", "x.pt"], "exactly one of"),
    (["--checkpoint", "missing.pt"], "no such checkpoint"),
    (["--demo", "--mode", "wavenet"], "mode"),
    (["--demo", "--upsample", "5,x"], "--upsample"),
    (["--demo", "--res-out-dims", "30"], "multiple of 4"),
])
def test_export_bad_input(capsys, workdir, args, needle):
    code, _, err = cli(capsys, "export", *args, "-o", workdir / "never.onnx")
    assert_one_line_error(code, err, needle)
    assert not (workdir / "never.onnx").exists()


def test_export_refuses_garbage_checkpoint(capsys, workdir):
    bad = workdir / "garbage.pt"
    bad.write_bytes(b"not a checkpoint at all")
    code, _, err = cli(capsys, "export", "--checkpoint", bad, "-o", workdir / "never.onnx")
    assert_one_line_error(code, err, "garbage.pt")


def test_export_refuses_existing_output_without_force(capsys, exported):
    before = exported.read_bytes()
    code, _, err = cli(capsys, "export", "--demo", *SMALL_FLAGS, "-o", exported)
    assert_one_line_error(code, err, "exists", "--force")
    assert exported.read_bytes() == before


# --- optimize -------------------------------------------------------------------------------
def test_optimize_prints_before_after_table_and_checks(capsys, workdir, exported):
    before = exported.read_bytes()
    out = workdir / "small.opt.onnx"
    code, stdout, err = cli(capsys, "optimize", exported, "-o", out, "--check", "--check-frames", "2")
    assert code == 0, err
    for row in ("ops outside loop", "ops inside loop body", "per-step MACs", "parameters", "file size"):
        assert row in stdout
    assert "check: outputs match" in stdout
    assert exported.read_bytes() == before  # the input is never modified
    onnx.checker.check_model(onnx.load(out), full_check=True)


def test_optimize_check_each_and_pass_selection(capsys, workdir, exported):
    code, stdout, err = cli(capsys, "optimize", exported, "-o", workdir / "sel.onnx", "--passes", "simplify",
                            "--check-each", "--check-frames", "2")
    assert code == 0, err
    assert "simplify" in stdout
    code, stdout, err = cli(capsys, "optimize", exported, "-o", workdir / "none.onnx",
                            "--passes", "simplify", "--skip", "simplify")
    assert code == 0, err
    assert onnx.load(workdir / "none.onnx").SerializeToString() == exported.read_bytes()


def test_list_passes(capsys):
    code, stdout, _ = cli(capsys, "optimize", "--list-passes")
    assert code == 0
    for name in ("simplify", "split_concat_matmul", "hoist_aux_projections", "fold_linear",
                 "fuse_concat_matmul_relu", "pad_dims", "lower_gru", "lower_native"):
        assert name in stdout
    assert "preset portable" in stdout and "preset native" in stdout


def test_default_optimize_cuts_per_step_macs(capsys, workdir, exported):
    out = workdir / "portable.onnx"
    code, stdout, err = cli(capsys, "optimize", exported, "-o", out, "--check", "--check-frames", "2")
    assert code == 0, err
    assert waveopt_macs(out) < waveopt_macs(exported)
    for name in ("split_concat_matmul", "hoist_aux_projections", "fold_linear", "fuse_concat_matmul_relu",
                 "pad_dims"):
        assert name in stdout


def test_bad_target_and_pad(capsys, workdir, exported):
    code, _, err = cli(capsys, "optimize", exported, "-o", workdir / "x.onnx", "--target", "gpu")
    assert_one_line_error(code, err, "--target")
    code, _, err = cli(capsys, "optimize", exported, "-o", workdir / "x.onnx", "--pad", "8")
    assert_one_line_error(code, err, "--pad")


def test_pad_with_native_target_is_refused(capsys, workdir, exported):
    """The native target runs no pad_dims: --pad there is an error, not silently ignored."""
    out = workdir / "native.onnx"
    code, _, err = cli(capsys, "optimize", exported, "-o", out, "--target", "native", "--pad", "32")
    assert_one_line_error(code, err, "--pad")
    assert not out.exists()


def waveopt_macs(path):
    import waveopt

    return waveopt.graph_stats(onnx.load(path)).macs_per_step


def test_optimize_model_without_loop_is_not_applicable(capsys, workdir):
    cnn = workdir / "cnn.onnx"
    onnx.save(cnn_model(), cnn)
    out = workdir / "cnn.opt.onnx"
    code, stdout, err = cli(capsys, "optimize", cnn, "-o", out)
    assert code == 0, err
    assert "not applicable" in stdout
    assert out.read_bytes() == cnn.read_bytes()


def test_optimize_bad_inputs(capsys, workdir, exported):
    garbage = workdir / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01this is not a protobuf\xff" * 10)
    truncated = workdir / "truncated.onnx"
    truncated.write_bytes(exported.read_bytes()[:1000])
    out = workdir / "never.onnx"
    cases = [
        ((workdir / "missing.onnx", "-o", out), "no such file"),
        ((garbage, "-o", out), "not a valid ONNX model"),
        ((truncated, "-o", out), "not a valid ONNX model"),
        ((exported, "-o", exported), "refusing to overwrite"),
        ((exported, "-o", out, "--passes", "nonsense"), "unknown pass"),
        ((exported, "-o", out, "--skip", "nonsense"), "unknown pass"),
        ((exported,), "--output"),
    ]
    for args, needle in cases:
        code, _, err = cli(capsys, "optimize", *args)
        assert_one_line_error(code, err, needle)
    assert not out.exists()


# --- vocode ---------------------------------------------------------------------------------
def test_vocode_writes_wav(capsys, workdir, exported, mels_file):
    out = workdir / "out.wav"
    code, stdout, err = cli(capsys, "vocode", exported, mels_file, "-o", out)
    assert code == 0, err
    with wave.open(str(out)) as w:
        assert w.getframerate() == 22050 and w.getnchannels() == 1 and w.getsampwidth() == 2
        assert w.getnframes() == 5 * 275
        audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert np.abs(audio).max() > 100  # not silence
    assert "real time" in stdout


def test_vocode_bad_mels(capsys, workdir, exported, models):
    cases = {
        "shape.npy": np.zeros((40, 6), np.float32),
        "rank.npy": np.zeros((2, 2, 80, 6), np.float32),
        "dtype.npy": np.zeros((80, 6), np.int16),
        "short.npy": np.zeros((80, 1), np.float32),
        "nan.npy": np.full((80, 6), np.nan, np.float32),
    }
    for name, array in cases.items():
        np.save(workdir / name, array)
        code, _, err = cli(capsys, "vocode", exported, workdir / name, "-o", workdir / "never.wav")
        assert_one_line_error(code, err, name)
    (workdir / "text.npy").write_text("not numpy")
    code, _, err = cli(capsys, "vocode", exported, workdir / "text.npy", "-o", workdir / "never.wav")
    assert_one_line_error(code, err, "text.npy")
    code, _, err = cli(capsys, "vocode", exported, workdir / "nothere.npy", "-o", workdir / "never.wav")
    assert_one_line_error(code, err, "no such mel file")
    assert not (workdir / "never.wav").exists()


# --- bench, demo-mels -----------------------------------------------------------------------
def test_bench_reports_rate(capsys, exported):
    code, stdout, err = cli(capsys, "bench", exported, "--frames", "2", "--repeats", "2")
    assert code == 0, err
    assert "samples/s" in stdout and "real time" in stdout and "MACs/sample" in stdout


def test_bench_bad_input(capsys, exported):
    code, _, err = cli(capsys, "bench", exported, "--frames", "1")
    assert_one_line_error(code, err, "--frames")


def test_demo_mels_command(capsys, workdir):
    out = workdir / "demo_mels.npy"
    code, _, err = cli(capsys, "demo-mels", "-o", out, "--frames", "7")
    assert code == 0, err
    assert np.load(out).shape == (80, 7)


def test_console_script_prints_no_traceback(tmp_path):
    """The installed entry point, as a user runs it."""
    exe = Path(sys.executable).with_name("waveopt")
    result = subprocess.run([str(exe), "optimize", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "o.onnx")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: no such file") and "Traceback" not in result.stderr
