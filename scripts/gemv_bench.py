"""GEMV / small-batch GEMM on WaveRNN's shapes: waveopt's kernels vs numpy, torch and ORT.

One thread everywhere. Three sections:

1. ``gemv``: Y = X·W + b for X [B, K], W [K, N], B in 1, 4, 16 and (K, N) in (512, 1536),
   (512, 512), (1536, 512) (a GRU's gates, fc1/fc2, their transpose). Each timed call
   runs R = 8 such products with 8 different weight matrices (8-24 MB in all, more than
   a core's L2, as in the WaveRNN step, where 12.6 MB of weights stream per sample):
   - ``waveopt``: 8 FusedDense nodes in one ORT session.run (the ISA the library chose);
   - ``ort``: 8 MatMul + Add nodes in one session.run (ORT's MLAS);
   - ``numpy``: ``x @ W + b`` 8 times (numpy's BLAS);
   - ``torch``: ``torch.addmm`` 8 times (on its own copies of the weights).
   Every variant reads its own 8 matrices, so none finds weights another just cached.
   Reported: GFLOP/s (2·B·K·N per product) and GB/s of weights (4·K·N per product),
   median of ``--repeats`` after warm-up, variants interleaved call by call.
2. ``bandwidth``: streaming read of 1, 3, 12 and 16 MB buffers (custom_ops' kernel test
   binary, AVX-512 or AVX2 loads): the roofline a bandwidth-bound GEMV can reach.
3. ``loop`` (``--loop``, needs torch): the fatchord-size demo model (rnn 512, fc 512,
   9 bits, RAW), B = 1 and 16: the native WaveRNNLoop op vs the exported ORT Loop model
   (conditioning included there), in samples/s; the op's inputs (hoisted projections) are
   computed beforehand and timed separately.

    .venv/bin/python scripts/gemv_bench.py [--repeats 15] [--loop] [--frames 4]

WAVEOPT_ISA=scalar|avx2|avx512 picks waveopt's kernels (once per process).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from waveopt import ops  # noqa: E402
from waveopt.runtime import session_options  # noqa: E402

SHAPES = [(512, 1536), (512, 512), (1536, 512)]
BATCHES = [1, 4, 16]
R = 8


def _model(nodes, inputs, outputs, inits, domain=False):
    opsets = [helper.make_opsetid("", 18)] + ([helper.make_opsetid(ops.DOMAIN, 1)] if domain else [])
    graph = helper.make_graph(nodes, "bench", inputs, outputs, initializer=inits)
    return helper.make_model(graph, opset_imports=opsets, ir_version=9).SerializeToString()


def gemv_models(ws, bs, batch, k, n):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, k])
    outs = [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [batch, n]) for i in range(R)]
    inits = [numpy_helper.from_array(w, f"W{i}") for i, w in enumerate(ws)]
    inits += [numpy_helper.from_array(b, f"b{i}") for i, b in enumerate(bs)]
    fused = [helper.make_node("FusedDense", ["x", f"W{i}", f"b{i}"], [f"y{i}"], domain=ops.DOMAIN,
                              activation="none") for i in range(R)]
    plain = []
    for i in range(R):
        plain.append(helper.make_node("MatMul", ["x", f"W{i}"], [f"m{i}"]))
        plain.append(helper.make_node("Add", [f"m{i}", f"b{i}"], [f"y{i}"]))
    return _model(fused, [x], outs, inits, domain=True), _model(plain, [x], outs, inits)


def median_times(fns: dict, repeats: int, warmup: int = 3, cpu: dict | None = None) -> dict:
    """Median wall seconds per variant; with ``cpu`` (a dict) also the median CPU seconds of
    this thread (ORT with one intra-op thread runs kernels on the calling thread), which
    leaves out the time a busy neighbour held the core."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    cpu_times = {name: [] for name in fns}
    for _ in range(repeats):  # interleaved: a noisy neighbour slows every variant alike
        for name, fn in fns.items():
            c0, t0 = time.thread_time(), time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
            cpu_times[name].append(time.thread_time() - c0)
    if cpu is not None:
        cpu.update({name: statistics.median(t) for name, t in cpu_times.items()})
    return {name: statistics.median(t) for name, t in times.items()}


def bench_gemv(repeats: int) -> None:
    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    print(f"\n## gemv: Y = X·W + b, {R} products per call (own weights each), 1 thread, median of {repeats}\n")
    print("| B | K | N | variant | us/product | GFLOP/s | GB/s (weights) |")
    print("|---:|---:|---:|---|---:|---:|---:|")
    for k, n in SHAPES:
        ws = [rng.standard_normal((k, n), dtype=np.float32) * 0.05 for _ in range(R)]
        bs = [rng.standard_normal(n, dtype=np.float32) for _ in range(R)]
        # torch gets its own copies: sharing numpy's would hand it weights numpy just pulled into cache.
        tws = [torch.from_numpy(w.copy()) for w in ws]
        tbs = [torch.from_numpy(b.copy()) for b in bs]
        for batch in BATCHES:
            x = rng.standard_normal((batch, k), dtype=np.float32)
            tx = torch.from_numpy(x)
            fused, plain = gemv_models(ws, bs, batch, k, n)
            s_fused = ort.InferenceSession(fused, ops.session_options(1), providers=["CPUExecutionProvider"])
            s_plain = ort.InferenceSession(plain, session_options(1), providers=["CPUExecutionProvider"])
            ref = s_plain.run(None, {"x": x})
            got = s_fused.run(None, {"x": x})
            assert all(np.allclose(a, b, atol=1e-3, rtol=1e-4) for a, b in zip(ref, got)), "FusedDense != MatMul+Add"
            fns = {
                "waveopt": lambda: s_fused.run(None, {"x": x}),
                "ort": lambda: s_plain.run(None, {"x": x}),
                "numpy": lambda: [x @ w + b for w, b in zip(ws, bs)],
                "torch": lambda: [torch.addmm(b, tx, w) for w, b in zip(tws, tbs)],
            }
            for name, t in median_times(fns, repeats).items():
                per = t / R
                print(f"| {batch} | {k} | {n} | {name} | {per * 1e6:.1f} | {2 * batch * k * n / per / 1e9:.1f} "
                      f"| {4 * k * n / per / 1e9:.1f} |")


def bench_bandwidth() -> None:
    exe = ops.library_path().parent / "waveopt_kernel_test"
    if not exe.is_file():
        print(f"\n(no {exe}: run `waveopt ops build` for the bandwidth probe)")
        return
    print("\n## bandwidth: streaming read, 1 thread\n")
    out = subprocess.run([str(exe), "bandwidth", "1", "3", "12", "16"], capture_output=True, text=True, check=True)
    for line in out.stdout.strip().splitlines():
        print(f"    {line}")


def bench_loop(repeats: int, frames: int) -> None:
    import torch

    from waveopt.demo_data import demo_mels, uniform_noise
    from waveopt.models import HParams, demo_model, export_wavernn
    from waveopt.models.native_reference import hoisted_inputs, loop_model, loop_weights
    from waveopt.runtime import session

    torch.set_num_threads(1)
    model = demo_model(HParams(mode="raw"), seed=0)
    steps = frames * model.hop_length
    loop_export = session(export_wavernn(model), threads=1)
    native = ort.InferenceSession(loop_model(loop_weights(model), "raw").SerializeToString(),
                                  ops.session_options(1), providers=["CPUExecutionProvider"])
    weight_mb = sum(loop_weights(model)[n].nbytes for n in ("W_hh1", "W_x2", "W_hh2", "W_fc1", "W_fc2", "W_fc3")) / 1e6
    print(f"\n## loop: fatchord-size demo model (rnn 512, fc 512, 9 bits, RAW), {steps} samples per utterance, "
          f"1 thread, median of {repeats}\n")
    print(f"recurrent weights streamed per step: {weight_mb:.1f} MB\n")
    print("| B | variant | samples/s | x ORT Loop | us/step | GB/s of weights | samples/s by CPU time |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for batch in (1, 16):
        mels = demo_mels(frames, batch=batch, seed=1)
        noise = uniform_noise(steps, batch, seed=1)
        feeds = {k: v for k, v in hoisted_inputs(model, mels, noise=noise, weights=False).items()}
        cpu = {}
        with torch.no_grad():
            fns = {
                "ORT Loop export (incl. conditioning)": lambda: loop_export.run(None, {"mels": mels, "noise": noise}),
                "native WaveRNNLoop (loop only)": lambda: native.run(None, feeds),
                "hoisting in torch (conditioning + projections)": lambda: hoisted_inputs(model, mels, weights=False),
            }
            times = median_times(fns, repeats, warmup=1, cpu=cpu)
        base = times["ORT Loop export (incl. conditioning)"]
        for name, t in times.items():
            rate = batch * steps / t
            gbs = weight_mb / 1e3 * steps / t
            print(f"| {batch} | {name} | {rate:,.0f} | {base / t:.2f} | {t / steps * 1e6:.1f} | {gbs:.1f} "
                  f"| {batch * steps / cpu[name]:,.0f} |")
        total = times["native WaveRNNLoop (loop only)"] + times["hoisting in torch (conditioning + projections)"]
        cpu_total = cpu["native WaveRNNLoop (loop only)"] + cpu["hoisting in torch (conditioning + projections)"]
        print(f"| {batch} | native + hoisting | {batch * steps / total:,.0f} | {base / total:.2f} "
              f"| {total / steps * 1e6:.1f} | | {batch * steps / cpu_total:,.0f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--loop", action="store_true", help="also time the WaveRNN loop (needs torch, ~1 min)")
    parser.add_argument("--loop-only", action="store_true", help="only the loop section")
    parser.add_argument("--frames", type=int, default=4, help="mel frames per utterance in the loop section")
    args = parser.parse_args(argv)
    ops.build()
    info = ops.info()
    print(f"# waveopt gemv bench\n\n- cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs")
    print(f"- waveopt kernels: {info['isa']} ({info['reason']}); onnxruntime {ort.__version__}; numpy {np.__version__}")
    if not args.loop_only:
        bench_gemv(args.repeats)
        bench_bandwidth()
    if args.loop or args.loop_only:
        bench_loop(max(3, args.repeats // 3), args.frames)
    return 0


if __name__ == "__main__":
    sys.exit(main())
