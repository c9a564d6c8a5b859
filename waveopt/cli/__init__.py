"""The ``waveopt`` command line: export, optimize, loop, vocode, mels, demo-mels, bench, profile, ops.

One module per command in this package; this one mounts them. Every user error is one
line ``error: ...`` on stderr and exit code 2 (a model that fails validation: ``error:
invalid model: ...``, unless ``--allow-invalid``); SIGINT and SIGTERM exit 130 and 143
after cleaning up; outputs are written atomically and inputs are never modified. Exit
code 1 means a bug in waveopt.
"""

from __future__ import annotations

import os
import sys

import typer

from waveopt.cli.bench import bench_command
from waveopt.cli.common import CONTEXT_SETTINGS, version_text
from waveopt.cli.demo_mels import demo_mels_command
from waveopt.cli.export import export_command
from waveopt.cli.loop import loop_command
from waveopt.cli.mels import mels_command
from waveopt.cli.ops import ops_app
from waveopt.cli.optimize import OptimizeCommand, optimize_command
from waveopt.cli.profile import profile_command
from waveopt.cli.vocode import vocode_command
from waveopt.errors import WaveoptError, one_line
from waveopt.interrupts import Interrupted, signals_raise
from waveopt.runtime import quiet_ort_logs

__all__ = ["app", "entry", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  context_settings=CONTEXT_SETTINGS,
                  help="Export and optimize WaveRNN vocoders for ONNX Runtime on CPUs.")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(version_text())
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the versions of waveopt, ONNX Runtime and ONNX, then exit."),
):
    """Export and optimize WaveRNN vocoders for ONNX Runtime on CPUs."""


app.command("export")(export_command)
app.command("optimize", cls=OptimizeCommand)(optimize_command)
app.command("loop")(loop_command)
app.command("vocode")(vocode_command)
app.command("mels")(mels_command)
app.command("demo-mels")(demo_mels_command)
app.command("bench")(bench_command)
app.command("profile")(profile_command)
app.add_typer(ops_app, name="ops")


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the app; a user error is one line and exit code 2, SIGINT/SIGTERM
    exit 130/143 once the command has cleaned up (temp files, a running ORT call)."""
    quiet_ort_logs()
    with signals_raise():
        try:
            result = app(args=argv, standalone_mode=False, prog_name="waveopt")
        except Interrupted as exc:
            typer.echo(f"error: {exc}", err=True)
            return exc.exit_code
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
            typer.echo(f"error: internal error ({type(exc).__name__}: {one_line(exc)}); "
                       "set WAVEOPT_DEBUG=1 for the traceback", err=True)
            return 1
    # typer returns the exit code of a KeyboardInterrupt (130) or typer.Exit it handled itself.
    return result if isinstance(result, int) else 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
