"""Baseline speed of WaveRNN generation: PyTorch eager vs ORT per sample vs the exported ONNX Loop.

For each sampling mode (RAW, MOL) of the fatchord-size demo model (rnn 512, fc 512,
9 bits), batch 1, one thread everywhere (torch and ORT intra-op), it times three ways
of generating the same samples from the same mels and noise:

1. ``eager``: PyTorch eager, fatchord's generate loop (``WaveRNN.generate_samples``,
   GRUCells, one Python iteration per sample), conditioning included.
2. ``ORT per sample``: the exported one-step model called once per sample from a Python
   for-loop, state fed back by hand: the anti-pattern the field notes warn about. The
   conditioning is computed once in torch beforehand; only the loop is timed.
3. ``ORT Loop``: the exported whole-generation model, one ``session.run`` per
   utterance, conditioning included.

Each is reported as samples/s (median over ``--repeats`` timed calls after one warm-up;
the variants are interleaved call by call, so a noisy neighbour slows all of them alike),
the spread of the repeats ((max - min) / median), the ratio to real time (22,050 samples/s),
the speed-up over eager, and the multiply-accumulates per sample counted from the Loop
model's graph (``waveopt.report.graph_stats``; the same for all three). Before timing, a
short input checks that the three produce the same samples (the project's rule: equal at
every step, or the first difference is a near-tie of the sampler); if not, nothing is timed
and the exit status is 1.

Run (about 2 minutes on 2 cores at the defaults; compare ratios within one run):

    .venv/bin/python scripts/bench.py [--frames 4] [--repeats 9] [--threads 1] \
        [--modes raw,mol] [--markdown]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
import torch

from waveopt.check import check_sampled
from waveopt.demo_data import demo_mels, uniform_noise
from waveopt.models import HParams, WaveRNN, demo_model, export_step, export_wavernn
from waveopt.report import graph_stats
from waveopt.runtime import Timing, session, time_calls

REAL_TIME = 22050  # samples/s of fatchord's default sample rate
CHECK_FRAMES = 2  # the equivalence check's input: 2 frames = 550 samples
SAMPLE_ATOL = 1e-4  # RAW samples are 2/511 apart, so this means "the same class"
TINY = dict(rnn_dims=32, fc_dims=32, res_out_dims=16, compute_dims=16, res_blocks=1)  # tests only

Runner = Callable[[], np.ndarray]  # generates samples [T, B] for a fixed input


@dataclasses.dataclass
class Prepared:
    """One mode's model, its two ONNX exports, sessions, and per-step MACs."""

    mode: str
    model: WaveRNN
    step_session: ort.InferenceSession
    loop_session: ort.InferenceSession
    macs_per_sample: int


@dataclasses.dataclass
class Row:
    mode: str
    variant: str
    timing: Timing
    samples: int
    speedup: float
    macs_per_sample: int

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.timing.median


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4, help="mel frames per utterance (275 samples each)")
    parser.add_argument("--repeats", type=int, default=9, help="timed calls per variant, after 1 warm-up")
    parser.add_argument("--threads", type=int, default=1, help="torch and ORT intra-op threads")
    parser.add_argument("--modes", default="raw,mol", help="comma-separated: raw, mol")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table for BENCHMARKS.md")
    parser.add_argument("--tiny", action="store_true", help="a tiny model (for the script's own test)")
    args = parser.parse_args(argv)
    args.command = shlex.join([os.path.relpath(sys.executable), os.path.relpath(__file__),
                               *(sys.argv[1:] if argv is None else argv)])
    args.modes = [m.strip().lower() for m in args.modes.split(",") if m.strip()]
    if not args.modes or set(args.modes) - {"raw", "mol"}:
        parser.error(f"--modes must name raw and/or mol, not {args.modes!r}")
    return args


# --- setup ------------------------------------------------------------------------------------
def prepare(mode: str, tiny: bool, threads: int) -> Prepared:
    """Build the seeded demo model, export the step and Loop models, open their sessions."""
    start = time.perf_counter()
    model = demo_model(HParams(mode=mode, **(TINY if tiny else {})))
    loop_proto = export_wavernn(model)
    step_proto = export_step(model)
    torch.set_num_threads(threads)  # again: exporting may have touched it
    stats = graph_stats(loop_proto)
    if stats.unknown_mac_ops:
        _progress(f"{mode}: MACs not counted for {', '.join(stats.unknown_mac_ops)}")
    _progress(f"{mode}: model built and exported in {time.perf_counter() - start:.0f} s")
    return Prepared(mode, model, session(step_proto, threads), session(loop_proto, threads),
                    stats.macs_per_step)


def inputs(model: WaveRNN, frames: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Demo mels [1, feat, frames] and noise [frames·hop, 1, 2]."""
    mels = demo_mels(frames, batch=1, feat_dims=model.hp.feat_dims, seed=seed)
    return mels, uniform_noise(frames * model.hop_length, batch=1, seed=seed)


def runners(p: Prepared, mels: np.ndarray, noise: np.ndarray) -> dict[str, Runner]:
    """The three variants, each a no-argument call that generates samples [T, B]."""
    return {
        "eager": eager_runner(p.model, mels, noise),
        "ORT per sample": per_sample_runner(p.model, p.step_session, mels, noise),
        "ORT Loop": loop_runner(p.loop_session, mels, noise),
    }


def eager_runner(model: WaveRNN, mels: np.ndarray, noise: np.ndarray) -> Runner:
    mels_t, noise_t = torch.from_numpy(mels), torch.from_numpy(noise)

    def run() -> np.ndarray:
        with torch.no_grad():
            return model.generate_samples(mels_t, noise_t).numpy()

    return run


def per_sample_runner(model: WaveRNN, step: ort.InferenceSession,
                      mels: np.ndarray, noise: np.ndarray) -> Runner:
    """session.run once per sample; the conditioning is computed here, outside the timed call."""
    with torch.no_grad():
        m, aux = model.condition(torch.from_numpy(mels))  # [B, T, feat], [B, T, 4·aux]
    m = np.ascontiguousarray(m.transpose(0, 1).numpy())  # time-major, so m[t] is contiguous
    aux = np.ascontiguousarray(aux.transpose(0, 1).numpy())
    steps, batch = m.shape[:2]
    names = [o.name for o in step.get_outputs()]  # x_next, h1, h2, sample (models/modules.py Step)

    def run() -> np.ndarray:
        x = np.zeros((batch, 1), np.float32)
        h1 = h2 = np.zeros((batch, model.rnn_dims), np.float32)
        out = np.empty((steps, batch), np.float32)
        for t in range(steps):
            x, h1, h2, out[t] = step.run(names, {"x": x, "m_t": m[t], "aux_t": aux[t],
                                                 "h1": h1, "h2": h2, "u": noise[t]})
        return out

    return run


def loop_runner(loop: ort.InferenceSession, mels: np.ndarray, noise: np.ndarray) -> Runner:
    def run() -> np.ndarray:
        return loop.run(["samples"], {"mels": mels, "noise": noise})[0]

    return run


# --- equivalence ------------------------------------------------------------------------------
def check_equivalence(p: Prepared) -> tuple[bool, list[str]]:
    """Do the ORT variants draw eager's samples on a short input? Returns (ok, one line each)."""
    mels, noise = inputs(p.model, CHECK_FRAMES, seed=1)
    variants = runners(p, mels, noise)
    reference = variants.pop("eager")
    expected = reference()

    def rerun_reference(nudged: np.ndarray) -> dict[str, np.ndarray]:
        return {"samples": eager_runner(p.model, mels, nudged)()}

    ok, lines = True, []
    for name, run in variants.items():
        record, _ = check_sampled("samples", expected, run(), SAMPLE_ATOL, noise, 1e-5, rerun_reference)
        ok &= record.ok
        verdict = "ok" if record.ok else "MISMATCH"
        lines.append(f"{p.mode} {name} vs eager: {verdict}, {record.note} "
                     f"(max abs diff {record.max_abs_diff:.2g})")
    return ok, lines


# --- timing -----------------------------------------------------------------------------------
def time_interleaved(variants: dict[str, Runner], repeats: int) -> dict[str, Timing]:
    """One warm-up call each, then ``repeats`` rounds that time every variant once."""
    for run in variants.values():
        run()
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            seconds[name] += time_calls(run, repeats=1, warmup=0).seconds
    return {name: Timing(s) for name, s in seconds.items()}


def benchmark(p: Prepared, frames: int, repeats: int) -> list[Row]:
    mels, noise = inputs(p.model, frames)
    samples = noise.shape[0]
    start = time.perf_counter()
    timings = time_interleaved(runners(p, mels, noise), repeats)
    _progress(f"{p.mode}: timed in {time.perf_counter() - start:.0f} s")
    eager = timings["eager"].median
    return [Row(p.mode, name, t, samples, eager / t.median, p.macs_per_sample) for name, t in timings.items()]


# --- report -----------------------------------------------------------------------------------
def machine() -> str:
    """CPU model and core count from /proc/cpuinfo (falls back to platform)."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs"
    fields = [dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
              for block in text.strip().split("\n\n")]
    fields = [{k.strip(): v.strip() for k, v in f.items()} for f in fields]
    name = fields[0].get("model name", platform.machine())
    cores = {(f.get("physical id"), f.get("core id")) for f in fields}
    return f"{name}, {len(cores)} cores, {len(fields)} logical CPUs"


def versions() -> str:
    return (f"python {platform.python_version()}, torch {torch.__version__}, "
            f"onnxruntime {ort.__version__}, onnx {onnx.__version__}, numpy {np.__version__}")


def header(args: argparse.Namespace, hp: HParams, check_lines: list[str]) -> list[tuple[str, str]]:
    size = f"rnn {hp.rnn_dims}, fc {hp.fc_dims}, {hp.bits} bits"
    return [
        ("machine", machine()),
        ("versions", versions()),
        ("command", args.command),
        ("settings", f"{'tiny ' if args.tiny else ''}demo model ({size}), batch 1, "
                     f"{args.frames} frame(s) = {args.frames * hp.hop_length} "
                     f"samples, {args.threads} thread(s), median of {args.repeats} after 1 warm-up, "
                     "variants interleaved"),
        ("equivalence", f"{CHECK_FRAMES} frames, same noise, ORT variants vs eager"),
        *(("", line) for line in check_lines),
    ]


def table_rows(rows: list[Row]) -> list[list[str]]:
    out = [["mode", "variant", "samples/s", "spread", "x real time", "speed-up vs eager",
            "MACs/sample", "GMAC/s"]]
    for r in rows:
        out.append([r.mode.upper(), r.variant, f"{r.samples_per_s:,.0f}", f"{r.timing.spread:.0%}",
                    f"{r.samples_per_s / REAL_TIME:.3f}", f"{r.speedup:.2f}x", f"{r.macs_per_sample:,}",
                    f"{r.samples_per_s * r.macs_per_sample / 1e9:.2f}"])
    return out


def format_text(head: list[tuple[str, str]], rows: list[Row]) -> str:
    lines = [f"{k + ':' if k else '':<12} {v}" for k, v in head]
    if not rows:
        return "\n".join(lines)
    cells = table_rows(rows)
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    for row in cells:
        lines.append("  ".join([row[0].ljust(widths[0]), row[1].ljust(widths[1]),
                                *(c.rjust(w) for c, w in zip(row[2:], widths[2:]))]).rstrip())
    return "\n".join(lines)


def format_markdown(head: list[tuple[str, str]], rows: list[Row]) -> str:
    lines = [f"- {k}: {v}" if k else f"  - {v}" for k, v in head]
    lines = [line.replace("command: ", "command: `", 1) + "`" if line.startswith("- command:") else line
             for line in lines]
    if not rows:
        return "\n".join(lines)
    cells = table_rows(rows)
    lines += ["", "| " + " | ".join(cells[0]) + " |", "|" + "---|" * 2 + "---:|" * (len(cells[0]) - 2)]
    lines += ["| " + " | ".join(row) + " |" for row in cells[1:]]
    return "\n".join(lines)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- main -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    rows: list[Row] = []
    check_lines: list[str] = []
    all_ok = True
    hp = None
    for mode in args.modes:
        p = prepare(mode, args.tiny, args.threads)
        hp = p.model.hp
        ok, lines = check_equivalence(p)
        all_ok &= ok
        check_lines += lines
        if all_ok:
            rows += benchmark(p, args.frames, args.repeats)
    head = header(args, hp, check_lines)
    print(format_markdown(head, rows) if args.markdown else format_text(head, rows))
    if not all_ok:
        print("The variants disagree: nothing is timed past the first mismatch.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
