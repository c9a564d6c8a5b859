"""A seeded mutation fuzzer: bad models get one clean line, never an internal error.

Mutants (tests/fuzz_mutators.py) of small exports -- RAW, MOL, teacher-forced and the
native-lowered RAW model -- go through ``waveopt optimize`` (portable and native) and
``waveopt vocode``, in-process (a handful as real subprocesses). Every run must end in

- exit 0, or exactly one line ``error: ...`` on stderr with exit 2 (no traceback, no line
  of ONNX Runtime's own log, no "internal error");
- the input file unchanged; no output and no temp file left behind on failure;
- ``optimize`` never writing a model from one that ``onnx.checker`` rejects.

``WAVEOPT_FUZZ_N`` mutants (default 240, about a minute on 2 cores); ``WAVEOPT_FUZZ_N=10000``
runs the long version and ``WAVEOPT_FUZZ_REPORT=path`` writes the outcomes as JSON.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from cli_helpers import cli_captured
from fuzz_mutators import mutate

from waveopt import ops
from waveopt.demo_data import demo_mels
from waveopt.model_info import wavernn_info
from waveopt.pipeline import optimize

N = int(os.environ.get("WAVEOPT_FUZZ_N", "240"))
SEED = int(os.environ.get("WAVEOPT_FUZZ_SEED", "0"))
# Cheap pass lists (simplify runs onnxsim: ~1 s a model); every 20th run uses the full preset.
PORTABLE = ["--passes", "split_concat_matmul,hoist_aux_projections,fold_linear,fuse_concat_matmul_relu,pad_dims"]
NATIVE = ["--passes", "lower_native,fold_linear", "--target", "native"]
ORT_LOG_MARKS = ("[E:onnxruntime", "[W:onnxruntime", "onnxruntime:", "Non-zero status code")


@pytest.fixture(scope="module")
def seeds(exports):
    """The models mutated: name -> ModelProto."""
    found = {"raw": exports("raw"), "mol": exports("mol"), "tf": exports("raw", teacher_forced=True)}
    if ops.built():
        found["native"] = optimize(exports("raw"), preset="native").model
    return found


def commands(i: int, model: Path, mels: Path, out: Path) -> list[str]:
    """The command that mutant ``i`` runs (rotating; every 20th the full preset with --check)."""
    kind = i % 3
    if kind == 0:
        return ["vocode", model, mels, "-o", out.with_suffix(".wav")]
    if i % 20 == 1:
        return ["optimize", model, "-o", out, "--check", "--check-frames", "2"]
    return ["optimize", model, "-o", out, *(PORTABLE if kind == 1 else NATIVE)]


def checker_accepts(data: bytes) -> bool:
    try:
        onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
        return True
    except Exception:
        return False


def classify(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    if code == 0:
        return "ok"
    if code == 1 and "internal error" in err:
        return "internal error"
    if code == 2 and len(lines) == 1 and lines[0].startswith("error: "):
        return "clean error"
    if code == 2 and any(mark in err for mark in ORT_LOG_MARKS):
        return "error with ORT log lines"
    return f"other (exit {code}, {len(lines)} lines)"


def run_fuzz(seeds: dict, folder: Path, n: int, seed: int = SEED) -> dict:
    """Run ``n`` mutants; returns {"outcomes": Counter, "by_mutator": ..., "problems": [...]}."""
    mels = {}
    for name, model in seeds.items():
        mels[name] = folder / f"mels_{name}.npy"
        np.save(mels[name], demo_mels(2, feat_dims=wavernn_info(model).feat_dims)[0])
    names = sorted(seeds)
    outcomes: collections.Counter = collections.Counter()
    by_mutator: dict = collections.defaultdict(collections.Counter)
    problems = []
    for i in range(n):
        rng = random.Random(seed * 1_000_003 + i)
        seed_name = names[i % len(names)]
        mutator, data = mutate(seeds[seed_name], rng)
        work = folder / f"case{i % 2}"
        work.mkdir(exist_ok=True)
        for stale in work.iterdir():
            stale.unlink()
        model = work / "mutant.onnx"
        model.write_bytes(data)
        args = commands(i, model, mels[seed_name], work / "out.onnx")
        code, out, err = cli_captured(*args)
        outcome = classify(code, err)
        written = [p for p in work.iterdir() if p.name != "mutant.onnx"]
        if args[0] == "optimize" and code == 0 and not checker_accepts(data):
            outcome = "ok on a checker-invalid model"
        if hashlib.sha256(model.read_bytes()).digest() != hashlib.sha256(data).digest():
            outcome = "input modified"
        elif code != 0 and written:
            outcome = f"left {written[0].name} on failure"
        outcomes[outcome] += 1
        by_mutator[mutator][outcome] += 1
        if outcome not in ("ok", "clean error"):
            problems.append({"case": i, "seed_model": seed_name, "mutator": mutator, "command": args[0],
                             "outcome": outcome, "stderr": err.strip()[-600:]})
    return {"outcomes": outcomes, "by_mutator": by_mutator, "problems": problems}


def test_mutants_get_exit_0_or_one_clean_error(seeds, tmp_path):
    start = time.perf_counter()
    result = run_fuzz(seeds, tmp_path, N)
    seconds = time.perf_counter() - start
    summary = dict(result["outcomes"].most_common())
    print(f"\n{N} mutants in {seconds:.0f} s: {summary}")
    report = os.environ.get("WAVEOPT_FUZZ_REPORT")
    if report:
        Path(report).write_text(json.dumps({
            "n": N, "seconds": seconds, "outcomes": summary,
            "by_mutator": {k: dict(v) for k, v in sorted(result["by_mutator"].items())},
            "problems": result["problems"]}, indent=1))
    assert set(summary) <= {"ok", "clean error"}, json.dumps(result["problems"][:5], indent=1)
    # The mutants are not all refused: the fuzzer reaches the passes and ORT.
    assert summary.get("ok", 0) >= N // 10 and summary.get("clean error", 0) >= N // 3


# --- a handful as the user runs them: the installed console script -----------------------------
SUBPROCESS_CASES = 6


def test_mutants_in_subprocesses(seeds, tmp_path):
    exe = Path(sys.executable).with_name("waveopt")
    mels = tmp_path / "mels.npy"
    np.save(mels, demo_mels(2, feat_dims=80)[0])
    names = sorted(seeds)
    for i in range(SUBPROCESS_CASES):
        rng = random.Random(10_000 + i)
        _, data = mutate(seeds[names[i % len(names)]], rng)
        model = tmp_path / f"m{i}.onnx"
        model.write_bytes(data)
        args = [str(a) for a in commands(i, model, mels, tmp_path / f"out{i}.onnx")]
        result = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=300)
        assert classify(result.returncode, result.stderr) in ("ok", "clean error"), result.stderr
        assert model.read_bytes() == data
