"""The files waveopt writes load and run in the ONNX Runtime of this venv, as a user runs them.

`make test` runs this with the pinned newest ORT, `make test-oldest-ort` with the oldest we
claim (1.17, which reads IR <= 9). Each form (raw export, portable, native) is written by the
CLI in a subprocess, checked against the unoptimized graph in this ORT (`optimize --check`),
loaded here in a plain InferenceSession and vocoded by the CLI.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from reference_check import assert_samples_match
from waveopt import ops
from waveopt.demo_data import demo_mels
from waveopt.model_info import example_inputs
from waveopt.models import HParams, demo_model
from waveopt.runtime import session

WAVEOPT = Path(sys.executable).with_name("waveopt")
SMALL = dict(rnn_dims=64, fc_dims=48, res_out_dims=32, compute_dims=32, res_blocks=2)
SMALL_FLAGS = [str(a) for k, v in SMALL.items() for a in (f"--{k.replace('_', '-')}", v)]
# ORT 1.17 reads IR versions up to 9.
OLDEST_IR = 9


def waveopt(*args) -> str:
    result = subprocess.run([str(WAVEOPT), *map(str, args)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"waveopt {' '.join(map(str, args))}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """raw, portable and (with the op library built) native models written by the CLI, and mels."""
    workdir = tmp_path_factory.mktemp("oldest_ort")
    files = {"raw": workdir / "raw.onnx", "portable": workdir / "opt.onnx"}
    waveopt("export", "--demo", *SMALL_FLAGS, "-o", files["raw"])
    waveopt("optimize", files["raw"], "-o", files["portable"], "--check")
    if ops.built():
        files["native"] = workdir / "native.onnx"
        waveopt("optimize", files["raw"], "-o", files["native"], "--target", "native", "--check")
    mels = workdir / "mels.npy"
    np.save(mels, demo_mels(frames=6, seed=2)[0])
    return files, mels


@pytest.mark.parametrize("form", ["raw", "portable", "native"])
def test_written_model_is_at_most_ir_9(form, written):
    files, _ = written
    if form not in files:
        pytest.skip("native ops library not built (make native)")
    assert onnx.load(files[form], load_external_data=False).ir_version <= OLDEST_IR


@pytest.mark.parametrize("form", ["portable", "native"])
def test_written_model_runs_like_the_raw_export_in_this_ort(form, written):
    files, _ = written
    if form not in files:
        pytest.skip("native ops library not built (make native)")
    raw = onnx.load(files["raw"])
    feed = example_inputs(raw, frames=3, seed=5)
    names = [o.name for o in raw.graph.output]
    expected = dict(zip(names, ort.InferenceSession(str(files["raw"]), providers=["CPUExecutionProvider"])
                        .run(None, feed)))
    got = dict(zip(names, session(files[form]).run(None, feed)))
    torch_model = demo_model(HParams(mode="raw", **SMALL), seed=0)  # what `export --demo` exported
    agreed = assert_samples_match(torch_model, feed["mels"], feed["noise"], expected["samples"], got["samples"])
    if agreed == len(got["samples"]):
        np.testing.assert_allclose(got["wave"], expected["wave"], atol=1e-4)


@pytest.mark.parametrize("form", ["raw", "portable", "native"])
def test_cli_vocodes_with_the_written_model(form, written, tmp_path):
    files, mels = written
    if form not in files:
        pytest.skip("native ops library not built (make native)")
    wav = tmp_path / f"{form}.wav"
    waveopt("vocode", files[form], mels, "-o", wav)
    assert wav.stat().st_size == 44 + 2 * 5 * 275  # 16-bit mono PCM, (frames - 1) * hop samples
