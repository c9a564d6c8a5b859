"""``waveopt mels``: an audio file (WAV, FLAC, ...) -> the mels a fatchord WaveRNN was trained on (.npy).

    speech.wav (any rate, any channels) -> mono at the analysis rate -> fatchord's log-mel,
    [0, 1]-normalised -> mels.npy [80, 1 + samples // hop] float32

The analysis is fatchord's (:mod:`waveopt.audio`); with ``--model`` its sample rate, hop and
band count come from the model's metadata, so the mels fit that model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import typer

from waveopt.audio import FATCHORD, MelAnalysis, load_audio, mel_from_audio
from waveopt.cli.common import emit_json, json_option
from waveopt.cli.files import refuse_overwrite, write_npy
from waveopt.graph import load_model

__all__ = ["mels_command"]


def mels_command(
    audio: Path = typer.Argument(..., metavar="AUDIO", help="A WAV, FLAC or other libsndfile audio file "
                                 "(mono or averaged to mono; resampled to the analysis rate)."),
    output: Path = typer.Option(..., "-o", "--output", help="The .npy file to write ([bands, frames] float32)."),
    model: Optional[Path] = typer.Option(None, "--model", metavar="MODEL",
                                         help="Take sample rate, hop and bands from this waveopt export "
                                              "(default: fatchord's 22,050 Hz, hop 275, 80 bands)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
    as_json: bool = json_option(),
):
    """Compute fatchord's mels of an audio file (copy-synthesis: then `waveopt vocode MODEL mels.npy`)."""
    refuse_overwrite(output, [audio, *([model] if model else [])], force)
    analysis = MelAnalysis.for_model(load_model(model)) if model is not None else FATCHORD
    samples = load_audio(audio, analysis.sample_rate)
    mels = mel_from_audio(samples, analysis)
    write_npy(output, mels)
    if as_json:
        emit_json({"output": str(output), "audio": str(audio), "shape": list(mels.shape),
                   "audio_seconds": samples.size / analysis.sample_rate, "analysis": dataclasses.asdict(analysis)})
        return
    typer.echo(f"wrote {output}: {list(mels.shape)} float32 from {audio} ({samples.size / analysis.sample_rate:.2f} s "
               f"at {analysis.sample_rate:,} Hz; n_fft {analysis.n_fft}, hop {analysis.hop_length}, "
               f"win {analysis.win_length}, fmin {analysis.fmin:g} Hz, [0, 1]-normalised dB)")
