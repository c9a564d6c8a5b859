"""Benchmark the native ops' worker teams on the fatchord-size demo model, in one run.

    .venv/bin/python scripts/bench_threads.py [--modes raw,mol] [--batches 1,16] [--repeats 5] [--threads 1,2]
                                              [--dims 512]

Rows, for RAW and MOL, batch 1 and 16 folds: native fp32 / int16 / int8 at each --threads
count (the ops' team: waveopt.session(threads=N), ORT at 1 intra-op thread), beside the
portable optimized model and the plain export at the largest count (ORT's intra-op pool).
Then, batch 1, native fp32 and int8 with a competing CPU-bound process on the machine
(`python -c 'while True: pass'`): 1 thread, N threads (the default adaptive team) and N
threads with WAVEOPT_THREADS_ADAPTIVE=0 (every member always works).
Samples/s are medians after a warm-up, the variants of one table interleaved call by call,
so a noisy machine shifts them together: compare ratios within a run. "x 1 thread" divides
by the same model's 1-thread median of the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time

import numpy as np
from bench_host import machine_line  # scripts/ is on sys.path
from bench_targets import time_interleaved

FOLD = (1000, 100)  # 64 frames x 275 = 17,600 samples -> 16 folds of 1,200 steps
FOLD_FRAMES = 64
SINGLE_FRAMES = 8
REAL_TIME = 22050


@contextlib.contextmanager
def busy_process():
    """One CPU-bound competitor for as long as the block runs."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.5)
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def environment(**values):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="raw,mol")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batches", default="1,16", help="1: one sequence of 8 frames; 16: 16 folds of 64 frames")
    parser.add_argument("--dims", type=int, default=512, help="rnn and fc widths of the demo model (fatchord: 512)")
    args = parser.parse_args(argv)
    counts = [int(t) for t in args.threads.split(",")]
    most = max(counts)

    import waveopt
    from waveopt.model_info import example_inputs, wavernn_info
    from waveopt.models import HParams, demo_model, export_wavernn
    from waveopt.quant import calibrate_ranges, default_calibration_mels
    from waveopt.runtime import session

    rows, busy_rows = [], []
    for mode in args.modes.split(","):
        torch_model = demo_model(HParams(mode=mode, rnn_dims=args.dims, fc_dims=args.dims))
        ranges = None
        batches = [(f"B={b}", None if b == "1" else FOLD) for b in args.batches.split(",")]
        for batch_name, fold in batches:
            plain = export_wavernn(torch_model, fold=fold)
            native = waveopt.optimize(plain, preset="native").model
            portable = waveopt.optimize(plain, preset="portable").model
            if ranges is None:  # calibrated once per mode (same weights at B=16)
                ranges = calibrate_ranges(native, default_calibration_mels(wavernn_info(plain)))
            models = {("native", "fp32"): native}
            for bits in (16, 8):
                options = {"quantize": {"bits": bits, "act_ranges": ranges}}
                models[("native", f"int{bits}")] = waveopt.optimize(native, passes=["quantize"],
                                                                    pass_options=options).model
            frames = FOLD_FRAMES if fold else SINGLE_FRAMES
            feed = example_inputs(plain, frames=frames, seed=0)
            steps, sequences = wavernn_info(plain).loop_shape(frames, 1)
            samples = steps * sequences
            with environment(WAVEOPT_THREADS_ADAPTIVE="0"):  # the raw team, however noisy the machine
                sessions = {(target, w, t): session(m, threads=t) for (target, w), m in models.items() for t in counts}
            sessions[("portable", "fp32", most)] = session(portable, threads=most)
            sessions[("plain", "fp32", most)] = session(plain, threads=most)
            runs = {k: (lambda s=s: s.run(["samples"], feed)) for k, s in sessions.items()}
            medians = time_interleaved(runs, args.repeats)
            for (target, w, t), seconds in medians.items():
                one = medians.get((target, w, 1))
                rows.append((mode.upper(), batch_name, target, w, t, samples / seconds, one / seconds if one else None))
                print(f"{mode} {batch_name} {target} {w} {t} thread(s): {samples / seconds:,.0f} samples/s",
                      file=sys.stderr)
            if fold is None:
                busy_rows += busy_table(mode, models, feed, samples, counts, args.repeats, session)
    print(render(rows, busy_rows, argv if argv is not None else sys.argv[1:]))
    return 0


def busy_table(mode, models, feed, samples, counts, repeats, session) -> list:
    most = max(counts)
    out = []
    for w in ("fp32", "int8"):
        model = models[("native", w)]
        sessions = {"1 thread": session(model, threads=1), f"{most} threads (adaptive, default)":
                    session(model, threads=most)}
        with environment(WAVEOPT_THREADS_ADAPTIVE="0"):
            sessions[f"{most} threads, WAVEOPT_THREADS_ADAPTIVE=0"] = session(model, threads=most)
        runs = {k: (lambda s=s: s.run(["samples"], feed)) for k, s in sessions.items()}
        with busy_process():
            medians = time_interleaved(runs, repeats)
        for name, seconds in medians.items():
            out.append((mode.upper(), w, name, samples / seconds, medians["1 thread"] / seconds))
            print(f"{mode} busy {w} {name}: {samples / seconds:,.0f} samples/s", file=sys.stderr)
    return out


def render(rows, busy_rows, argv) -> str:
    out = [
        machine_line(),
        f"command: python scripts/bench_threads.py {' '.join(argv)}".rstrip(),
        "",
        "| mode | batch | model | weights | threads | samples/s | x 1 thread | x real time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, batch, target, w, t, rate, ratio in rows:
        out.append(f"| {mode} | {batch} | {target} | {w} | {t} | {rate:,.0f} | "
                   f"{f'{ratio:.2f}' if ratio else '-'} | {rate / REAL_TIME:.3f} |")
    out += ["", "With a competing CPU-bound process (`python -c 'while True: pass'`), batch 1, native:", "",
            "| mode | weights | team | samples/s | x 1 thread |", "|---|---|---|---|---|"]
    for mode, w, name, rate, ratio in busy_rows:
        out.append(f"| {mode} | {w} | {name} | {rate:,.0f} | {ratio:.2f} |")
    return "\n".join(out)


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
