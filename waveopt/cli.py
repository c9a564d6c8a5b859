"""The ``waveopt`` command line: export, optimize, vocode, bench.

Every user error is one line ``error: ...`` on stderr and exit code 2; outputs are
written atomically and inputs are never modified.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from .errors import WaveoptError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Export and optimize WaveRNN vocoders for ONNX Runtime on CPUs.")


def _refuse_overwrite(output: Path, inputs: list[Path], force: bool) -> None:
    for path in inputs:
        if path.exists() and output.exists() and os.path.samefile(path, output) and not force:
            raise WaveoptError(f"output {output} is the input file; refusing to overwrite it (use --force)")
    if output.is_dir():
        raise WaveoptError(f"output {output} is a directory")
    if not output.parent.exists() and str(output.parent) not in ("", "."):
        raise WaveoptError(f"output folder {output.parent} does not exist")


# --- export -------------------------------------------------------------------------------
@app.command()
def export(
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the ONNX model."),
    checkpoint: Optional[Path] = typer.Option(None, help="A fatchord WaveRNN checkpoint (state_dict)."),
    demo: bool = typer.Option(False, "--demo", help="Export the built-in seeded demo model."),
    mode: Optional[str] = typer.Option(None, help="raw or mol (demo only; a checkpoint knows its mode)."),
    bits: Optional[int] = typer.Option(None, help="RAW bits (demo; default 9)."),
    rnn_dims: Optional[int] = typer.Option(None, help="GRU width (demo; default 512)."),
    fc_dims: Optional[int] = typer.Option(None, help="Dense width (demo; default 512)."),
    feat_dims: Optional[int] = typer.Option(None, help="Mel bands (demo; default 80)."),
    compute_dims: Optional[int] = typer.Option(None, help="MelResNet width (demo; default 128)."),
    res_out_dims: Optional[int] = typer.Option(None, help="Aux width, 4 chunks (demo; default 128)."),
    res_blocks: Optional[int] = typer.Option(None, help="MelResNet blocks (demo; default 10)."),
    pad: Optional[int] = typer.Option(None, help="Context frames each side (demo; default 2)."),
    upsample: Optional[str] = typer.Option(None, help="Upsample factors, e.g. 5,5,11 (demo)."),
    sample_rate: Optional[int] = typer.Option(None, help="Sample rate of the audio (default 22050)."),
    seed: int = typer.Option(0, help="Seed of the demo model's weights."),
    fold: bool = typer.Option(False, "--fold", help="Batched fold generation (fatchord's batched mode)."),
    target: int = typer.Option(11000, help="Samples per fold (with --fold)."),
    overlap: int = typer.Option(550, help="Cross-faded samples between folds (with --fold)."),
    teacher_forced: bool = typer.Option(False, "--teacher-forced",
                                        help="Loop over given previous samples; output per-step logits."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
):
    """Export a WaveRNN as ONE ONNX model: conditioning network + the sample loop as an ONNX Loop."""
    if demo == (checkpoint is not None):
        raise WaveoptError("give exactly one of --checkpoint CKPT or --demo")
    _refuse_overwrite(output, [checkpoint] if checkpoint else [], force)
    if output.exists() and not force:
        raise WaveoptError(f"output {output} exists (use --force to overwrite)")
    from .exporting import export_model

    shape = dict(mode=mode, bits=bits, rnn_dims=rnn_dims, fc_dims=fc_dims, feat_dims=feat_dims,
                 compute_dims=compute_dims, res_out_dims=res_out_dims, res_blocks=res_blocks, pad=pad,
                 upsample_factors=_parse_factors(upsample))
    report = export_model(output, checkpoint=checkpoint, hparams=shape, sample_rate=sample_rate, seed=seed,
                          fold=(target, overlap) if fold else None, teacher_forced=teacher_forced)
    typer.echo(report)


def _parse_factors(text: Optional[str]):
    if text is None:
        return None
    try:
        factors = tuple(int(f) for f in text.split(","))
    except ValueError:
        raise WaveoptError(f"--upsample takes integers separated by commas, e.g. 5,5,11; got {text!r}") from None
    if not factors or min(factors) < 1:
        raise WaveoptError(f"--upsample factors must be positive, got {text!r}")
    return factors


# --- optimize -----------------------------------------------------------------------------
def _list_passes(value: bool):
    if value:
        from .passes import PASSES, PRESETS

        for name, cls in PASSES.items():
            typer.echo(f"{name:24} {cls.description}")
        for preset, names in PRESETS.items():
            typer.echo(f"preset {preset}: {', '.join(names)}")
        raise typer.Exit(0)


@app.command()
def optimize(
    model: Path = typer.Argument(..., help="The ONNX model to optimize (never modified)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Where to write the optimized model."),
    passes: Optional[str] = typer.Option(None, help="Comma-separated passes to run (default: the preset's)."),
    skip: Optional[str] = typer.Option(None, help="Comma-separated passes to leave out."),
    target: str = typer.Option("portable", help="portable (standard ONNX ops) or native (the fused C++ op)."),
    pad: int = typer.Option(16, help="pad_dims multiple: 16, 32 (AVX-512), or 0 to skip padding."),
    check: bool = typer.Option(False, "--check", help="Compare the result with the input in ORT."),
    check_each: bool = typer.Option(False, "--check-each", help="Check after every pass; name the one that breaks."),
    check_frames: int = typer.Option(8, help="Mel frames of the seeded check inputs."),
    quant: str = typer.Option("none", help="none, int8 or int16 (int16: native target only)."),
    calibrate: Optional[list[Path]] = typer.Option(
        None, help="Mel .npy files to calibrate and check quantization on (default: the demo mels); "
                   "list them after it: --calibrate a.npy b.npy."),
    more_calibrate: Optional[list[Path]] = typer.Argument(None, hidden=True),
    min_snr: Optional[float] = typer.Option(None, help="Refuse a quantized model whose teacher-forced logit "
                                            "SNR against float32 is under this many dB [default: 25]."),
    force: bool = typer.Option(False, "--force", help="Allow overwriting the input or an existing output, "
                               "and writing a quantized model under --min-snr."),
    list_passes: bool = typer.Option(False, "--list-passes", callback=_list_passes, is_eager=True,
                                     help="List passes and presets, then exit."),
):
    """Run the pass pipeline and print a before/after table."""
    from .optimizing import optimize_file

    if target not in ("portable", "native"):
        raise WaveoptError(f"--target must be portable or native, not {target!r}")
    if pad not in (0, 16, 32):
        raise WaveoptError(f"--pad must be 16, 32 or 0, not {pad}")
    if output is None:
        raise WaveoptError("missing -o/--output: where to write the optimized model")
    if more_calibrate and not calibrate:
        raise WaveoptError(f"unexpected argument {more_calibrate[0]} (only one model is optimized at a time)")
    calibration = [*(calibrate or []), *(more_calibrate or [])]
    _refuse_overwrite(output, [model, *calibration], force)
    typer.echo(optimize_file(model, output, passes=_names(passes), skip=_names(skip) or (), preset=target,
                             pad=pad, check=check, check_each=check_each, check_frames=check_frames,
                             quant=quant, calibrate=calibration, min_snr=min_snr, force=force))


def _names(text: Optional[str]) -> Optional[list[str]]:
    return [n.strip() for n in text.split(",") if n.strip()] if text is not None else None


# --- vocode -------------------------------------------------------------------------------
@app.command()
def vocode(
    model: Path = typer.Argument(..., help="An exported (optionally optimized) WaveRNN model."),
    mels: Path = typer.Argument(..., help="Mel spectrogram .npy: [feat, frames] or [1, feat, frames], float."),
    output: Path = typer.Option(..., "-o", "--output", help="The .wav file to write."),
    seed: int = typer.Option(0, help="Seed of the sampling noise."),
    threads: int = typer.Option(1, help="ORT intra-op threads."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
):
    """Generate a waveform from a mel spectrogram with one ORT call."""
    from .vocoding import vocode_file

    _refuse_overwrite(output, [model, mels], force)
    if output.exists() and not force:
        raise WaveoptError(f"output {output} exists (use --force to overwrite)")
    typer.echo(vocode_file(model, mels, output, seed=seed, threads=threads))


@app.command("demo-mels")
def demo_mels(
    output: Path = typer.Option(..., "-o", "--output", help="The .npy file to write ([feat, frames] float32)."),
    frames: int = typer.Option(40, help="Mel frames (275 samples each at the default hop)."),
    feat_dims: int = typer.Option(80, help="Mel bands."),
    seed: int = typer.Option(0, help="Seed."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
):
    """Write seeded speech-like demo mels to try `vocode` with."""
    from .demo_data import demo_mels as make_mels
    from .graph import atomic_write_bytes

    if frames < 2 or feat_dims < 1:
        raise WaveoptError("--frames must be at least 2 and --feat-dims at least 1")
    _refuse_overwrite(output, [], force)
    if output.exists() and not force:
        raise WaveoptError(f"output {output} exists (use --force to overwrite)")
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, make_mels(frames, feat_dims=feat_dims, seed=seed)[0])
    atomic_write_bytes(output, buffer.getvalue())
    typer.echo(f"wrote {output}: [{feat_dims}, {frames}] float32")


# --- bench --------------------------------------------------------------------------------
@app.command()
def bench(
    model: Path = typer.Argument(..., help="An exported (optionally optimized) WaveRNN model."),
    frames: int = typer.Option(8, help="Mel frames per run."),
    batch: int = typer.Option(1, help="Utterances per run (unfolded models)."),
    threads: int = typer.Option(1, help="ORT intra-op threads."),
    repeats: int = typer.Option(5, help="Timed runs; the median is reported."),
    warmup: int = typer.Option(1, help="Untimed runs first."),
):
    """Samples per second and real-time factor of a model in ORT (median after warm-up)."""
    from .benchmarking import bench_file

    typer.echo(bench_file(model, frames=frames, batch=batch, threads=threads, repeats=repeats, warmup=warmup))


from .ops_cli import ops_app  # noqa: E402
from .profile_cli import profile  # noqa: E402

app.add_typer(ops_app, name="ops")
app.command("profile")(profile)


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the app, turning user errors into one line and exit code 2."""
    try:
        app(args=argv, standalone_mode=False)
    except WaveoptError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        return 130
    except KeyboardInterrupt:
        typer.echo("error: interrupted", err=True)
        return 130
    except typer.TyperException as exc:  # usage errors: unknown option, missing argument, ...
        message = " ".join((exc.format_message() if hasattr(exc, "format_message") else str(exc)).split())
        if message:  # empty after `waveopt` alone: the help was printed
            typer.echo(f"error: {message}", err=True)
        return 2
    except Exception as exc:
        if os.environ.get("WAVEOPT_DEBUG"):
            raise
        typer.echo(f"error: internal error ({type(exc).__name__}: {' '.join(str(exc).split())[:300]}); "
                   "set WAVEOPT_DEBUG=1 for the traceback", err=True)
        return 1
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
