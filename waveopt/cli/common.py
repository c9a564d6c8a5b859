"""What every ``waveopt`` command shares: its options' names and meaning, JSON output, progress.

One place decides each convention:

- ``--json``: the command's numbers as one JSON object on stdout (:func:`emit_json`), nothing else;
- ``--quiet`` / ``-q``: no progress lines; progress (:mod:`waveopt.progress`) goes to stderr only,
  on a terminal or with ``WAVEOPT_PROGRESS=1``, and ``--json`` silences it too (:func:`progress_for`);
- ``--frames`` / ``--batch``: the shape of the mels a command runs a model on, the same in
  bench, profile and optimize --check (:func:`frames_option`, :func:`batch_option`);
- list options take repeats and comma lists: ``--calibrate a.npy --calibrate b.npy`` =
  ``--calibrate a.npy,b.npy`` (:func:`split_list`); :class:`ListOptionCommand` also keeps the
  older ``--calibrate a.npy b.npy`` working without a hidden argument.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import typer
from typer.core import TyperCommand

from waveopt import __version__
from waveopt.errors import WaveoptError
from waveopt.progress import reporting

__all__ = ["CONTEXT_SETTINGS", "version_text", "require_plotting", "emit_json", "to_jsonable", "progress_for",
           "quiet_option", "json_option", "frames_option",
           "batch_option", "split_list", "ListOptionCommand", "FRAMES_HELP", "BATCH_HELP"]

# Set to 1 for progress lines when stderr is not a terminal (a CI log).
PROGRESS_ENV = "WAVEOPT_PROGRESS"

# -h as well as --help, on every command (subcommands inherit the setting).
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}

FRAMES_HELP = "Mel frames of the inputs a waveopt export runs on (hop samples each, 275 by default)."
BATCH_HELP = "Utterances per run (unfolded waveopt exports; a folded model folds one)."


def version_text() -> str:
    """``waveopt --version``: this package's version and the ONNX Runtime / ONNX it runs with."""

    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return (f"waveopt {__version__} (onnxruntime {version('onnxruntime')}, onnx {version('onnx')}, "
            f"Python {platform.python_version()})")


def require_plotting(option: str = "--plot") -> None:
    """Refuse ``--plot`` before any work when matplotlib (the extra ``waveopt[plot]``) is missing."""
    if importlib.util.find_spec("matplotlib") is None:
        raise WaveoptError(f"{option} needs matplotlib: pip install 'waveopt[plot]'")


def emit_json(data) -> None:
    """Print ``data`` as indented JSON on stdout (numpy numbers, paths and dataclasses included)."""
    typer.echo(json.dumps(to_jsonable(data), indent=2))


def to_jsonable(value):
    """Plain JSON values for dataclasses, numpy scalars/arrays, paths; NaN/inf become null."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalar or array
        return to_jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@contextlib.contextmanager
def progress_for(quiet: bool, as_json: bool = False) -> Iterator[None]:
    """Progress lines on stderr for the command's long stages: on a terminal, or in a log when
    ``WAVEOPT_PROGRESS=1``; never with ``--quiet`` or ``--json``."""
    wanted = sys.stderr.isatty() or os.environ.get(PROGRESS_ENV) == "1"
    with reporting(on=wanted and not (quiet or as_json)):
        yield


def quiet_option():
    return typer.Option(False, "--quiet", "-q", help="No progress lines on stderr.")


def json_option():
    return typer.Option(False, "--json", help="Print the results as one JSON object on stdout (no progress lines).")


def allow_invalid_option():
    return typer.Option(False, "--allow-invalid",
                        help="Work on a model that fails validation (onnx.checker, waveopt metadata, the Loop's "
                             "interface).")


def frames_option(default: int, help: str = FRAMES_HELP):
    return typer.Option(default, "--frames", help=help)


def batch_option(help: str = BATCH_HELP):
    return typer.Option(1, "--batch", help=help)


def split_list(values: Iterable[str] | None) -> list[str]:
    """Repeated and comma-separated values as one list: ["a,b", "c"] -> ["a", "b", "c"]."""
    return [part.strip() for value in values or () for part in str(value).split(",") if part.strip()]


class ListOptionCommand(TyperCommand):
    """A command whose list options also take several values after one flag.

    ``--calibrate a.npy b.npy`` is read as ``--calibrate a.npy --calibrate b.npy``: the words
    after the flag that end in one of the option's suffixes are its values (so a model path
    after them is still an argument). Subclasses set ``list_options`` = {flag: suffixes}.
    """

    list_options: dict[str, tuple[str, ...]] = {}

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        return super().parse_args(ctx, expand_list_options(args, self.list_options))


def expand_list_options(args: list[str], options: dict[str, tuple[str, ...]]) -> list[str]:
    """``[--calibrate, a.npy, b.npy, m.onnx]`` -> ``[--calibrate, a.npy, --calibrate, b.npy, m.onnx]``."""
    out: list[str] = []
    flag = None
    i = 0
    while i < len(args):
        word = args[i]
        if word == "--":
            return out + args[i:]
        name = word.split("=", 1)[0]
        if name in options:
            out.append(word)
            if "=" not in word and i + 1 < len(args):  # the flag's own value
                i += 1
                out.append(args[i])
            flag = name
        elif flag is not None and not word.startswith("-") and word.lower().endswith(options[flag]):
            out += [flag, word]
        else:
            flag = None
            out.append(word)
        i += 1
    return out
