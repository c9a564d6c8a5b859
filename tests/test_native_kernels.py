"""The native kernels without ORT: custom_ops/tests/kernel_test.cc, and the build's hygiene.

- every SIMD table this CPU can run vs the scalar reference (GEMM with all epilogues and
  ragged shapes, GRU gates, sampling, exp/sigmoid/tanh accuracy, the whole loop), and AVX2
  vs AVX-512 vs AVX-512 VNNI bit for bit; the integer kernels (quantize, int8/int16 GEMM)
  bit for bit against the scalar reference and exact against int64 sums, saturation edge
  cases included, and QuantizedMatrix::pack's bounds after rounding;
- nothing leaks out of an ISA's translation unit: its object file defines one global
  symbol (the table accessor) and no weak/inline ones the linker could pick for shared code;
- the library exports RegisterCustomOps and nothing else;
- with WAVEOPT_SANITIZE_TESTS=1, the same kernel test built with ASan + UBSan, and the ORT
  glue (both ops, valid and invalid inputs) with the sanitized library loaded into Python
  (libasan and libstdc++ preloaded; torch is left out, it does not start under ASan).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from waveopt import ops

SANITIZE = pytest.mark.skipif(os.environ.get("WAVEOPT_SANITIZE_TESTS") != "1",
                              reason="set WAVEOPT_SANITIZE_TESTS=1 (builds custom_ops/build/sanitize, ~1.5 min)")

# Runs both ops through ORT on valid and invalid inputs (numpy + onnx + onnxruntime only).
GLUE_SCRIPT = r"""
import sys, numpy as np, onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
lib = sys.argv[1]
rng = np.random.default_rng(0)
H, F, N, T, B = 40, 24, 30, 50, 3
def r(*s, scale=0.2): return (rng.standard_normal(s) * scale).astype(np.float32)
W = {"u1": r(3*H), "u2": r(3*H), "u3": r(F), "W_hh1": r(3*H, H), "b_hh1": r(3*H), "W_x2": r(3*H, H),
     "W_hh2": r(3*H, H), "b_hh2": r(3*H), "W_fc1": r(F, H), "W_fc2": r(F, F), "W_fc3": r(N, F), "b_fc3": r(N)}
names = ["gi1", "gi2", "f1", "f2"] + list(W) + ["noise"]
def opts():
    so = ort.SessionOptions(); so.log_severity_level = 4; so.register_custom_ops_library(lib); return so
def model(mode, tf, const=True, **quant):
    drv = "prev_samples" if tf else "noise"
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ["gi1", "gi2", "f1", "f2", drv]]
    inits = [numpy_helper.from_array(v, k) for k, v in W.items()] if const else []
    if not const: ins += [helper.make_tensor_value_info(k, TensorProto.FLOAT, None) for k in W]
    node = helper.make_node("WaveRNNLoop", ["gi1", "gi2", "f1", "f2"] + list(W) + [drv], ["y"], domain="waveopt.ops", mode=mode, teacher_forced=int(tf), **quant)
    g = helper.make_graph([node], "g", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("waveopt.ops", 1)], ir_version=9)
    return ort.InferenceSession(m.SerializeToString(), opts(), providers=["CPUExecutionProvider"])
feeds = {"gi1": r(T, B, 3*H, scale=1), "gi2": r(T, B, 3*H, scale=1), "f1": r(T, B, F), "f2": r(T, B, F),
         "noise": rng.uniform(1e-5, 1-1e-5, (T, B, 2)).astype(np.float32)}
errors = 0
for mode in ("raw", "mol"):
    for const in (True, False):
        extra = {} if const else W
        y = model(mode, False, const).run(None, {**feeds, **extra})[0]
        assert y.shape == (T, B) and np.isfinite(y).all()
        y = model(mode, True, const).run(None, {**{k: v for k, v in feeds.items() if k != "noise"}, "prev_samples": r(T, B), **extra})[0]
        assert y.shape == (T, B, N)
for quant in ("int8", "int16"):  # the integer paths, weights packed at creation and per run
    for const in (True, False):
        extra = {} if const else W
        y = model("raw", False, const, quant=quant, act_ranges=[2.0, 1.5]).run(None, {**feeds, **extra})[0]
        assert y.shape == (T, B) and np.isfinite(y).all()
for bad in ({"quant": "int4", "act_ranges": [1.0, 1.0]}, {"quant": "int8"}, {"quant": "int8", "act_ranges": [1.0, -1.0]}):
    try:
        model("raw", False, **bad).run(None, feeds); print("no error for", bad); errors += 1
    except Exception as e:
        assert "WaveRNNLoop" in str(e), e
s = model("raw", False)
for k in ["gi1", "gi2", "f1", "f2", "noise"]:
    for bad in (feeds[k][:-1], feeds[k][..., :-1], feeds[k][None], feeds[k].reshape(-1)):
        try:
            s.run(None, {**feeds, k: np.ascontiguousarray(bad)}); print("no error for", k, bad.shape); errors += 1
        except Exception as e:
            assert "WaveRNNLoop" in str(e) or "invalid" in str(e).lower(), e
s.run(None, {k: v[:0] for k, v in feeds.items()})
for act in ("none", "relu", "tanh", "sigmoid"):
    w, b = r(37, 29), r(29)
    xs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("x0", "x1")]
    quant = {"none": {}, "relu": {"quant": "int8"}, "tanh": {"quant": "int16"}, "sigmoid": {}}[act]
    node = helper.make_node("FusedDense", ["x0", "x1", "W", "b"], ["y"], domain="waveopt.ops", activation=act, **quant)
    g = helper.make_graph([node], "d", xs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("waveopt.ops", 1)], ir_version=9)
    d = ort.InferenceSession(m.SerializeToString(), opts(), providers=["CPUExecutionProvider"])
    x0, x1 = r(70, 30, scale=1), r(70, 7, scale=1)
    y = d.run(None, {"x0": x0, "x1": x1})[0]
    assert np.abs(y[:, 0] - {"none": lambda v: v, "relu": lambda v: np.maximum(v, 0), "tanh": np.tanh,
                             "sigmoid": lambda v: 1 / (1 + np.exp(-v))}[act](np.concatenate([x0, x1], 1) @ w[:, 0] + b[0])).max() < (0.05 if quant else 1e-4)
    try:
        d.run(None, {"x0": x0, "x1": x1[:, :-1]}); errors += 1
    except Exception as e:
        assert "FusedDense" in str(e), e
print("glue ok" if not errors else f"{errors} errors")
sys.exit(1 if errors else 0)
"""


@pytest.fixture(scope="module")
def build_dir() -> Path:
    return ops.build()


def run(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)


def test_kernels_match_scalar_reference(build_dir):
    result = run([build_dir / "waveopt_kernel_test", "accuracy"])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "OK: 0 failure(s)" in result.stdout


def _defined_symbols(obj: Path) -> list[tuple[str, str]]:
    result = run(["nm", "--defined-only", obj])
    assert result.returncode == 0, result.stderr
    out = []
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            out.append((parts[1], parts[2]))
    return out


@pytest.mark.skipif(shutil.which("nm") is None, reason="needs binutils' nm")
@pytest.mark.parametrize("isa", ["avx2", "avx512", "avx512vnni"])
def test_isa_objects_expose_only_their_table(build_dir, isa):
    objs = list(build_dir.glob(f"CMakeFiles/waveopt_kernels_{isa}.dir/**/*.o"))
    assert len(objs) == 1, objs
    symbols = _defined_symbols(objs[0])
    global_syms = [name for kind, name in symbols if kind.isupper()]
    assert global_syms == [f"waveopt_kernels_{isa}"], global_syms
    weak = [name for kind, name in symbols if kind in "WVu"]
    assert not weak, weak


@pytest.mark.skipif(shutil.which("nm") is None, reason="needs binutils' nm")
def test_library_exports_only_register_custom_ops(build_dir):
    result = run(["nm", "-D", "--defined-only", ops.library_path()])
    assert result.returncode == 0, result.stderr
    names = [line.split()[-1] for line in result.stdout.splitlines() if line.strip()]
    assert names == ["RegisterCustomOps"]


@SANITIZE
def test_kernels_under_asan_and_ubsan():
    sanitize_dir = ops.build(sanitize=True)
    result = run([sanitize_dir / "waveopt_kernel_test"], env=dict(os.environ, ASAN_OPTIONS="detect_leaks=1"))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "OK: 0 failure(s)" in result.stdout


@SANITIZE
def test_ort_glue_under_asan_and_ubsan(tmp_path):
    sanitize_dir = ops.build(sanitize=True)
    preload = []
    for lib in ("libasan.so", "libstdc++.so"):
        found = run(["gcc", f"-print-file-name={lib}"]).stdout.strip()
        if not os.path.isabs(found):
            pytest.skip(f"gcc does not know where {lib} is")
        preload.append(found)
    script = tmp_path / "glue.py"
    script.write_text(GLUE_SCRIPT)
    env = dict(os.environ, LD_PRELOAD=" ".join(preload), ASAN_OPTIONS="detect_leaks=0")
    result = run([sys.executable, script, sanitize_dir / ops.LIBRARY_NAME], env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "glue ok" in result.stdout
