"""Folded models at every frame count (issue 13, bug 1), as a user runs them.

fatchord's fold arithmetic makes zero folds when the whole sequence is at most ``overlap``
samples long (1 or 2 frames at target 11000, overlap 550): the exported model failed in
post-processing ("Concat ... {0,550} != {1,550}") and the native op refused its noise. A
tiny model exported through the CLI with the same ratio (hop 8, target 24, overlap 16: 1
and 2 frames are at most one overlap) is vocoded and benched as plain, portable and native
model, and its outputs compared with the PyTorch reference at frames 1..8 and a few larger.
"""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from cli_helpers import cli
from reference_check import assert_samples_match
from waveopt import ops
from waveopt.cli import main
from waveopt.demo_data import demo_mels, uniform_noise
from waveopt.model_info import wavernn_info
from waveopt.models import HParams, demo_model
from waveopt.runtime import session

TINY = dict(rnn_dims=32, fc_dims=32, res_out_dims=16, compute_dims=16, res_blocks=1, feat_dims=8,
            upsample_factors=(2, 4))
FOLD = (24, 16)  # target, overlap: hop 8, so 1 and 2 frames are <= overlap
FLAGS = ["--rnn-dims", "32", "--fc-dims", "32", "--res-out-dims", "16", "--compute-dims", "16",
         "--res-blocks", "1", "--feat-dims", "8", "--upsample", "2,4",
         "--fold", "--target", str(FOLD[0]), "--overlap", str(FOLD[1])]
FRAMES = [1, 2, 3, 4, 5, 6, 7, 8, 13, 21]
needs_native = pytest.mark.skipif(not ops.built(), reason="native ops not built (make native)")


@pytest.fixture(scope="module")
def forms(tmp_path_factory):
    """{form: path}: the tiny folded export (through the CLI in a subprocess) and its optimized forms."""
    folder = tmp_path_factory.mktemp("folded")
    paths = {"plain": folder / "folded.onnx"}
    exe = Path(sys.executable).with_name("waveopt")
    result = subprocess.run([str(exe), "export", "--demo", *FLAGS, "-o", str(paths["plain"])],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    targets = ["portable"] + (["native"] if ops.built() else [])
    for target in targets:
        paths[target] = folder / f"folded.{target}.onnx"
        assert main(["optimize", str(paths["plain"]), "-o", str(paths[target]), "--target", target]) == 0
    return paths


@pytest.fixture(scope="module")
def reference():
    return demo_model(HParams(mode="raw", **TINY), seed=0)  # what `export --demo` (seed 0) exports


def test_fold_counts_at_short_lengths(forms):
    info = wavernn_info(onnx.load(forms["plain"]))
    steps = sum(FOLD) + FOLD[1]
    assert [info.loop_shape(frames, 1) for frames in (1, 2, 3, 5, 7, 8)] == [
        (steps, 1), (steps, 1), (steps, 1), (steps, 1), (steps, 1), (steps, 2)]


@pytest.mark.parametrize("form", ["plain", "portable", pytest.param("native", marks=needs_native)])
def test_folded_model_matches_reference_at_every_length(form, forms, reference):
    proto = onnx.load(forms[form])
    info = wavernn_info(proto)
    sess = session(proto)
    for frames in FRAMES:
        mels = demo_mels(frames, feat_dims=8, seed=frames)
        steps, folds = info.loop_shape(frames, 1)
        noise = uniform_noise(steps, folds, seed=frames)
        wave_out, samples = sess.run(["wave", "samples"], {"mels": mels, "noise": noise})
        expected = reference.generate_samples(torch.from_numpy(mels), torch.from_numpy(noise), fold=FOLD).numpy()
        assert samples.shape == expected.shape == (steps, folds), frames
        agreed = assert_samples_match(reference, mels, noise, expected, samples, fold=FOLD)
        assert wave_out.shape == (1, (frames - 1) * 8), frames
        if agreed == steps:
            np.testing.assert_allclose(wave_out, reference.finish_waveform(expected.T, frames, FOLD), atol=1e-5,
                                       err_msg=f"{form}, {frames} frames")


@pytest.mark.parametrize("form", ["plain", "portable", pytest.param("native", marks=needs_native)])
def test_vocode_and_bench_folded_model_at_two_frames(capsys, tmp_path, form, forms, reference):
    for frames in (2, 3, 9):
        mels = demo_mels(frames, feat_dims=8, seed=1)[0]
        np.save(tmp_path / "mels.npy", mels)
        out = tmp_path / f"{frames}.wav"
        code, _, err = cli(capsys, "vocode", forms[form], tmp_path / "mels.npy", "-o", out)
        assert code == 0, err
        with wave.open(str(out)) as w:
            audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2") / 32767
        steps, folds = wavernn_info(onnx.load(forms[form])).loop_shape(frames, 1)
        noise = torch.from_numpy(uniform_noise(steps, folds, seed=0))  # vocode's --seed 0
        expected = reference.generate(torch.from_numpy(mels[None]), noise, fold=FOLD)[0]
        assert audio.shape == expected.shape == ((frames - 1) * 8,)
        np.testing.assert_allclose(audio, np.clip(expected, -1, 1), atol=2 / 32767)
    code, stdout, err = cli(capsys, "bench", forms[form], "--frames", "2", "--repeats", "1")
    assert code == 0, err
    assert "samples/s" in stdout
