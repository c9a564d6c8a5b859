"""Benchmark the optimization targets on the fatchord-size demo model, in one run.

    .venv/bin/python scripts/bench_targets.py [--modes raw,mol] [--threads 1,2] [--repeats 3] [--markdown]

For RAW and MOL, batch 1 (one utterance) and 16 folds (fatchord's batched generation),
and each thread count, it times the same generation in ONNX Runtime as:

- plain:    the exported Loop model, unoptimized;
- portable: after `waveopt optimize` (standard ONNX ops: hoisting, folding, fusing, padding);
- native:   after `waveopt optimize --target native` (the Loop is one waveopt.ops::WaveRNNLoop).

It reports samples/s (medians after a warm-up, variants interleaved call by call), the
ratio to plain, per-step MACs, achieved GFLOP/s and the weight traffic in GB/s, against
this machine's limits measured in the same run by waveopt.profile.bandwidth (one core's read rate
at the weights' size, and the FMA peak). Every variant is first checked against plain on
the same inputs (samples identical or a near-tie first mismatch).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import onnx

import waveopt
from bench_host import machine_line  # scripts/ is on sys.path
from waveopt.profile.bandwidth import probe_limits
from waveopt.check import compare_models
from waveopt.model_info import example_inputs, wavernn_info
from waveopt.runtime import session

FOLD = (1000, 100)  # 64 frames x 275 = 17,600 samples -> 16 folds of 1,200 steps
FOLD_FRAMES = 64
SINGLE_FRAMES = 4


def build(mode: str) -> dict[str, onnx.ModelProto]:
    from waveopt.models import HParams, demo_model, export_wavernn

    torch_model = demo_model(HParams(mode=mode))
    models = {}
    for batch_name, fold in (("B=1", None), ("B=16", FOLD)):
        plain = export_wavernn(torch_model, fold=fold)
        models[(batch_name, "plain")] = plain
        models[(batch_name, "portable")] = waveopt.optimize(plain, preset="portable").model
        models[(batch_name, "native")] = waveopt.optimize(plain, preset="native").model
    return models


def inputs_for(model: onnx.ModelProto, batch_name: str) -> dict:
    frames = FOLD_FRAMES if batch_name == "B=16" else SINGLE_FRAMES
    return example_inputs(model, frames=frames, seed=0)


def time_interleaved(runs: dict, repeats: int) -> dict[str, float]:
    for run in runs.values():
        run()  # warm-up
    seconds = {k: [] for k in runs}
    for _ in range(repeats):
        for key, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[key].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in seconds.items()}


def weight_bytes(model: onnx.ModelProto) -> int:
    """fp32 bytes of the per-step matrices: 4 bytes per MAC of the loop."""
    return 4 * waveopt.graph_stats(model).macs_per_step


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="raw,mol")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    limits = probe_limits()
    rows = []
    for mode in args.modes.split(","):
        models = build(mode)
        for batch_name in ("B=1", "B=16"):
            plain = models[(batch_name, "plain")]
            feed = inputs_for(plain, batch_name)
            info = wavernn_info(plain)
            steps, sequences = info.loop_shape(feed["mels"].shape[2], feed["mels"].shape[0])
            for variant in ("portable", "native"):
                result = compare_models(plain, models[(batch_name, variant)], feed)
                if not result.ok:
                    print(f"{mode} {batch_name} {variant}: MISMATCH {result.summary()}", file=sys.stderr)
                    return 1
            for threads in [int(t) for t in args.threads.split(",")]:
                sessions = {v: session(models[(batch_name, v)], threads=threads)
                            for v in ("plain", "portable", "native")}
                runs = {v: (lambda s=s: s.run(["samples"], feed)) for v, s in sessions.items()}
                medians = time_interleaved(runs, args.repeats)
                for variant, seconds in medians.items():
                    model = models[(batch_name, variant)]
                    macs = waveopt.graph_stats(model).macs_per_step
                    rate = steps * sequences / seconds
                    step_rate = steps / seconds  # weights are read once per step for all folds
                    read, size = limits.read_rate(weight_bytes(model))
                    rows.append(dict(mode=mode.upper(), batch=batch_name, threads=threads, variant=variant,
                                     rate=rate, ratio=medians["plain"] / seconds, macs=macs,
                                     gflops=2 * macs * rate / 1e9, gbps=weight_bytes(model) * step_rate / 1e9,
                                     read=read, read_size=size))
                    print(f"{mode} {batch_name} t={threads} {variant}: {rate:,.0f} samples/s", file=sys.stderr)
    print(render(rows, limits, args))
    return 0


def render(rows, limits, args) -> str:
    head = [
        machine_line(),
        "limits (one core, this run): read " + ", ".join(
            f"{r:.0f} GB/s @ {s // 2**20} MB" for s, r in sorted(limits.read_gbps.items()))
        + f"; FMA peak {limits.fma_gflops:.0f} GFLOP/s",
        f"command: python scripts/bench_targets.py {' '.join(sys.argv[1:])}".rstrip(),
        "",
    ]
    cols = ["mode", "batch", "threads", "variant", "samples/s", "x plain", "x real time", "MACs/step",
            "GFLOP/s", "weights GB/s", "read limit"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["mode"], r["batch"], str(r["threads"]), r["variant"], f"{r['rate']:,.0f}", f"{r['ratio']:.2f}",
            f"{r['rate'] / 22050:.3f}", f"{r['macs']:,}", f"{r['gflops']:.1f}", f"{r['gbps']:.1f}",
            f"{r['read']:.0f} @ {r['read_size'] // 2**20} MB"]) + " |")
    return "\n".join(head + lines)


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
