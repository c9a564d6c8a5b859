"""SIGINT and SIGTERM during real `waveopt` processes, and temp files left by killed writers.

- a signal during `vocode` (portable: ORT's Loop; native: WaveRNNLoop) stops the ORT call
  at once (RunOptions.terminate), exits 130 (SIGINT) or 143 (SIGTERM) with one line, and
  leaves no output and no temp file; it never aborts (SIGABRT) or exits 0;
- the same during `optimize`;
- a temp file of a killed writer is recognisable by its name and removed by the next write
  to the same path, while one of a running process is left alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from waveopt import ops
from waveopt.demo_data import demo_mels
from waveopt.graph import TEMP_MARK, atomic_write_bytes, save_model
from waveopt.pipeline import optimize

EXE = Path(sys.executable).with_name("waveopt")
# 550 k steps of the small model: ~30 s of work, never run to the end. Not more: ORT stops
# between kernels, and the conditioning's last Conv is one kernel that grows with the frames
# (~1 s here at 2,000 frames, ~9 s at 4,000 on a Zen 4 host), so a signal landing in it waits.
LONG_FRAMES = 2000


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def handles_sigterm(pid: int) -> bool:
    """Whether the process catches SIGTERM: waveopt's entry point has installed its handlers."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


def interrupt(args: list, signum: int, work_seconds: float, timeout: float = 240):
    """Start `waveopt *args`, send ``signum`` once it has spent ``work_seconds`` of CPU time in
    the command (after its handlers are in place); (returncode, stderr, seconds to exit)."""
    process = subprocess.Popen([str(EXE), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + timeout
    try:
        while not handles_sigterm(process.pid):
            assert process.poll() is None and time.monotonic() < deadline, "waveopt ended before its handlers"
            time.sleep(0.02)
        start = cpu_seconds(process.pid)
        while cpu_seconds(process.pid) - start < work_seconds:
            assert process.poll() is None, f"waveopt finished before the signal: {process.stderr.read()}"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        sent = time.monotonic()
        process.send_signal(signum)
        _, err = process.communicate(timeout=timeout)
        return process.returncode, err, time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def assert_interrupted(code, err, signum, folder: Path, inputs: dict[Path, bytes]):
    assert code == 128 + signum, err
    lines = err.strip().splitlines()
    assert lines == [f"error: interrupted by {signal.Signals(signum).name}"], err
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in inputs), "output or temp file left"
    for path, data in inputs.items():
        assert path.read_bytes() == data


@pytest.fixture(scope="module")
def models_dir(exports, tmp_path_factory):
    folder = tmp_path_factory.mktemp("signals")
    save_model(exports("raw"), folder / "raw.onnx")
    if ops.built():
        save_model(optimize(exports("raw"), preset="native").model, folder / "native.onnx")
    np.save(folder / "long.npy", demo_mels(LONG_FRAMES)[0])
    return folder


def work_folder(models_dir, tmp_path, model: str) -> tuple[Path, dict[Path, bytes]]:
    inputs = {}
    for name in (model, "long.npy"):
        if not (models_dir / name).exists():
            pytest.skip(f"{name} not available (native ops not built)")
        inputs[tmp_path / name] = (models_dir / name).read_bytes()
        (tmp_path / name).write_bytes(inputs[tmp_path / name])
    return tmp_path, inputs


@pytest.mark.parametrize("model, signum", [("raw.onnx", signal.SIGINT), ("native.onnx", signal.SIGINT),
                                           ("raw.onnx", signal.SIGTERM)])
def test_signal_during_vocode_stops_the_ort_call(models_dir, tmp_path, model, signum):
    folder, inputs = work_folder(models_dir, tmp_path, model)
    code, err, seconds = interrupt(["vocode", folder / model, folder / "long.npy", "-o", folder / "out.wav"],
                                   signum, work_seconds=1.5)
    assert_interrupted(code, err, signum, folder, inputs)
    if model == "raw.onnx":  # ORT stops between kernels; the native WaveRNNLoop is one kernel
        assert seconds < 10, f"took {seconds:.1f} s to stop: the ORT call was not terminated"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_optimize(models_dir, tmp_path, signum):
    folder, inputs = work_folder(models_dir, tmp_path, "raw.onnx")
    code, err, _ = interrupt(["optimize", folder / "raw.onnx", "-o", folder / "out.onnx", "--check",
                              "--check-frames", "400"], signum, work_seconds=1.0)
    assert_interrupted(code, err, signum, folder, inputs)


def test_stale_temp_file_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "model.onnx"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".model.onnx{TEMP_MARK}{dead.pid}"
    stale.write_bytes(b"partial")
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        running = tmp_path / f".model.onnx{TEMP_MARK}{alive.pid}"
        running.write_bytes(b"being written")
        other = tmp_path / f".other.onnx{TEMP_MARK}{dead.pid}"
        other.write_bytes(b"another path's")
        atomic_write_bytes(target, b"new")
        assert target.read_bytes() == b"new"
        assert not stale.exists()  # its writer is gone
        assert running.exists() and other.exists()  # a running writer's, another path's
    finally:
        alive.kill()
        alive.wait()


def test_interrupted_write_leaves_no_temp_file(tmp_path, monkeypatch):
    from waveopt.interrupts import Interrupted

    def fsync(fd):
        raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(Interrupted):
        atomic_write_bytes(tmp_path / "out.onnx", b"data")
    assert list(tmp_path.iterdir()) == []


def test_save_model_names_its_temp_file_recognisably(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (seen.append(Path(src).name), real_replace(src, dst)))
    save_model(onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [])), tmp_path / "m.onnx")
    assert seen == [f".m.onnx{TEMP_MARK}{os.getpid()}"]
