"""Benchmark quantization on the fatchord-size demo model: speed and accuracy, in one run.

    .venv/bin/python scripts/bench_quant.py [--modes raw,mol] [--repeats 3] [--isa ISA]

Variants (1 thread): native fp32 / int16 / int8 and portable fp32 / int8, for RAW and MOL,
batch 1 and 16 folds. Speed: samples/s (medians after a warm-up, variants interleaved call
by call) and the ratio to native fp32, with the weight bytes each step streams and the GB/s
that makes. Accuracy (batch 1, the guard of `waveopt optimize --quant` on the demo mels):
teacher-forced logit SNR, argmax (RAW) / sampled-value (MOL) agreement, log-mel distance of
the free-running audio next to two float32 runs' distance. B=16 models reuse the B=1
calibration (same weights). --isa sets WAVEOPT_ISA (e.g. avx2 or avx512 to compare paths).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from bench_host import machine_line  # scripts/ is on sys.path
from bench_targets import time_interleaved

FOLD = (1000, 100)  # 64 frames x 275 = 17,600 samples -> 16 folds of 1,200 steps
FOLD_FRAMES = 64
SINGLE_FRAMES = 8
VARIANTS = [("native", 0), ("native", 16), ("native", 8), ("portable", 0), ("portable", 8)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="raw,mol")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--isa", default=None)
    args = parser.parse_args(argv)
    if args.isa:
        os.environ["WAVEOPT_ISA"] = args.isa

    from waveopt.models import HParams, demo_model, export_wavernn

    import waveopt
    from waveopt.model_info import example_inputs, wavernn_info
    from waveopt.quant.guard import quantize_checked
    from waveopt.runtime import session

    speed_rows, accuracy_rows = [], []
    for mode in args.modes.split(","):
        torch_model = demo_model(HParams(mode=mode))
        ranges = {}  # (target, bits) -> the B=1 calibration, reused at B=16 (same weights)
        for batch_name, fold in (("B=1", None), ("B=16", FOLD)):
            plain = export_wavernn(torch_model, fold=fold)
            fp32 = {t: waveopt.optimize(plain, preset=t).model for t in ("native", "portable")}
            models = {}
            for target, bits in VARIANTS:
                if not bits:
                    models[(target, bits)] = fp32[target]
                elif batch_name == "B=1":
                    start = time.perf_counter()
                    model, acc, _ = quantize_checked(fp32[target], bits)
                    print(f"{mode} {target} int{bits}: guard {time.perf_counter() - start:.0f} s", file=sys.stderr)
                    models[(target, bits)] = model
                    ranges[(target, bits)] = acc.act_ranges
                    accuracy_rows.append((mode.upper(), target, bits, acc))
                else:
                    options = {"quantize": {"bits": bits, "act_ranges": ranges[(target, bits)]}}
                    models[(target, bits)] = waveopt.optimize(fp32[target], passes=["quantize"],
                                                              pass_options=options).model
            frames = FOLD_FRAMES if fold else SINGLE_FRAMES
            feed = example_inputs(plain, frames=frames, seed=0)
            steps, sequences = wavernn_info(plain).loop_shape(frames, 1)
            sessions = {k: session(m, threads=1) for k, m in models.items()}
            runs = {k: (lambda s=s, f=feed: s.run(["samples"], f)) for k, s in sessions.items()}
            medians = time_interleaved(runs, args.repeats)
            base = medians[("native", 0)]
            for (target, bits), seconds in medians.items():
                weight_bytes = waveopt.graph_stats(fp32[target]).macs_per_step * (bits // 8 if bits else 4)
                speed_rows.append((mode.upper(), batch_name, target, bits, steps * sequences / seconds,
                                   base / seconds, weight_bytes, weight_bytes * steps / seconds / 1e9))
                print(f"{mode} {batch_name} {target} int{bits or 32}: {steps * sequences / seconds:,.0f} samples/s",
                      file=sys.stderr)
    print(render(speed_rows, accuracy_rows, argv if argv is not None else sys.argv[1:]))
    return 0


def render(speed_rows, accuracy_rows, argv) -> str:
    head = [
        machine_line(),
        f"command: python scripts/bench_quant.py {' '.join(argv)}".rstrip(),
        "",
        "| mode | batch | target | weights | samples/s | x native fp32 | x real time | weight bytes/step | GB/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, batch, target, bits, rate, ratio, wbytes, gbps in speed_rows:
        head.append(f"| {mode} | {batch} | {target} | {f'int{bits}' if bits else 'fp32'} | {rate:,.0f} | "
                    f"{ratio:.2f} | {rate / 22050:.3f} | {wbytes / 1e6:.2f} MB | {gbps:.1f} |")
    head += ["", "| mode | target | weights | logit SNR | agreement | log-mel dist. | fp32 vs fp32 (other noise) |",
             "|---|---|---|---|---|---|---|"]
    for mode, target, bits, acc in accuracy_rows:
        head.append(f"| {mode} | {target} | int{bits} | {acc.logit_snr_db:.1f} dB | {100 * acc.agreement:.2f} % | "
                    f"{acc.log_mel_db:.2f} dB | {acc.log_mel_noise_db:.2f} dB |")
    return "\n".join(head)


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
