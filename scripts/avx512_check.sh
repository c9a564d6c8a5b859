#!/usr/bin/env bash
# Build waveopt's native ops on a fresh x86-64 Linux machine and check the AVX-512 path:
# prints the CPU's SIMD flags, builds the library (Release) with its kernel test, runs the
# kernel test (every ISA vs the scalar reference, float32 and int8/int16), the ONNX Runtime
# tests of the ops on every ISA path (against the PyTorch reference and the scalar path;
# the quantized ops bit-identical across AVX2, AVX-512BW and VNNI where the CPU has it),
# and a short benchmark (loop samples/s, GEMV and integer GEMM shapes, read bandwidth).
#
#   scripts/avx512_check.sh            (from the repository root; ~5 min on 2 cores)
#
# Needs python3 (>= 3.10) with venv, cmake >= 3.18, g++ >= 9, and npm (to fetch ONNX
# Runtime's headers once) or ORT_INCLUDE_DIR pointing at them. Exit status: 0 all passed,
# 1 a check failed, 2 the machine cannot run AVX-512 (or lacks a tool).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== machine"
uname -srm
grep -m1 'model name' /proc/cpuinfo || true
FLAGS=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx|avx2|fma|avx512[a-z_0-9]*)$' | sort | tr '\n' ' ')
echo "SIMD flags: ${FLAGS:-none}"
for f in avx2 fma avx512f avx512bw avx512vl; do
    if ! grep -m1 '^flags' /proc/cpuinfo | grep -qw "$f"; then
        echo "this CPU lacks $f: the AVX-512 path cannot run here (the library still builds and falls back)" >&2
        exit 2
    fi
done
for tool in python3 cmake g++; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 2; }
done
if [ -z "${ORT_INCLUDE_DIR:-}" ] && ! command -v npm >/dev/null; then
    echo "missing npm (or set ORT_INCLUDE_DIR to ONNX Runtime's C API headers)" >&2
    exit 2
fi

echo "== python environment (make venv)"
make -s venv
PY=.venv/bin/python

echo "== build"
"$PY" -c "from waveopt import ops; ops.build(verbose=True)" | tail -n 3
BUILD=custom_ops/build/release
export WAVEOPT_ISA=avx512
"$PY" -c "import json; from waveopt import ops; print(json.dumps(ops.info(), indent=1))"

echo "== kernel test (scalar reference vs avx2 vs avx512 [vs avx512vnni], no ORT)"
"$BUILD/waveopt_kernel_test" accuracy

echo "== ORT tests of the ops (every ISA path, float32 and quantized)"
unset WAVEOPT_ISA
"$PY" -m pytest -q tests/test_native_kernels.py tests/test_native_op.py tests/test_native_quant.py \
    -k "avx512 or bitwise or bit_identical or dispatch or isa or kernels or fused_dense or rejects or quant"

echo "== benchmark"
"$BUILD/waveopt_kernel_test" bench avx512 200
"$BUILD/waveopt_kernel_test" qgemm
"$BUILD/waveopt_kernel_test" bandwidth 1 3 12 16
"$PY" scripts/gemv_bench.py --repeats 7
echo "== avx512 check passed"
