"""``waveopt ops``: build the native ONNX Runtime ops and say which kernels they run.

Mounted by :mod:`waveopt.cli` as ``waveopt ops``.
"""

from __future__ import annotations

import json

import typer

from waveopt import ops
from waveopt.errors import WaveoptError

ops_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                      help="Native ops (WaveRNNLoop, FusedDense) for ONNX Runtime: build and inspect.")


@ops_app.command("build")
def build_command(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show CMake's and the compiler's output."),
    sanitize: bool = typer.Option(False, "--sanitize",
                                  help="Build the ASan+UBSan variant (custom_ops/build/sanitize) instead."),
):
    """Configure and build libwaveopt_ops.so (CMake, Release, -O3); incremental."""
    out = ops.build(verbose=verbose, sanitize=sanitize)
    typer.echo(f"built {out / ops.LIBRARY_NAME}")


@ops_app.command("info")
def info_command(
    as_json: bool = typer.Option(False, "--json", help="Print the JSON object."),
):
    """Which library, which ONNX Runtime, and which kernels (ISA) this process runs, and why."""
    if not ops.built():
        raise WaveoptError(f"native ops library not built: {ops.library_path()} is missing (run `waveopt ops build`)")
    data = ops.info()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    cpu = ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in data["cpu"].items())
    typer.echo(f"library:      {data['library_path']}")
    typer.echo(f"onnxruntime:  {data['ort_version']} (ops use ORT API {data['ort_api']})")
    typer.echo(f"kernels:      {data['isa']} ({data['reason']})")
    typer.echo(f"requested:    {data['requested']} (set WAVEOPT_ISA=scalar|avx2|avx512|avx512vnni to force)")
    typer.echo(f"cpu:          {cpu}")
    typer.echo(f"ops:          {', '.join(data['ops'])} (domain {ops.DOMAIN})")
