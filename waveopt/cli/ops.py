"""``waveopt ops``: build the native ONNX Runtime ops and say which kernels they run.

Mounted by :mod:`waveopt.cli` as ``waveopt ops``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from waveopt import ops
from waveopt.cli.common import emit_json, json_option
from waveopt.cli.files import refuse_overwrite
from waveopt.errors import WaveoptError
from waveopt.graph import atomic_write_bytes, load_model
from waveopt.triton import triton_config

ops_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                      help="Native ops (WaveRNNLoop, FusedDense) for ONNX Runtime: build, inspect, deploy.")


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
    as_json: bool = json_option(),
):
    """Which library, which ONNX Runtime, and which kernels (ISA) this process runs, and why."""
    if not ops.built():
        raise WaveoptError(f"native ops library not built: {ops.library_path()} is missing (run `waveopt ops build`)")
    data = ops.info()
    if as_json:
        emit_json(data)
        return
    cpu = ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in data["cpu"].items())
    typer.echo(f"library:      {data['library_path']}")
    typer.echo(f"onnxruntime:  {data['ort_version']} (ops use ORT API {data['ort_api']})")
    typer.echo(f"kernels:      {data['isa']} ({data['reason']})")
    typer.echo(f"requested:    {data['requested']} (set WAVEOPT_ISA=scalar|avx2|avx512|avx512vnni to force)")
    typer.echo(f"cpu:          {cpu}")
    typer.echo(f"ops:          {', '.join(data['ops'])} (domain {ops.DOMAIN})")


@ops_app.command("triton-config")
def triton_config_command(
    model: Path = typer.Argument(..., metavar="MODEL", help="The ONNX model to serve."),
    output: Optional[Path] = typer.Option(None, "-o", "--output",
                                          help="Write config.pbtxt here (default: print it on stdout)."),
    name: Optional[str] = typer.Option(None, help="The model's name in the Triton repository "
                                       "(default: the file's stem)."),
    library: Optional[str] = typer.Option(None, metavar="PATH",
                                          help="Where the server finds libwaveopt_ops.so (default: this machine's "
                                               "path, as `waveopt ops info` prints it)."),
    threads: int = typer.Option(1, help="ORT intra-op threads per model instance."),
    instances: int = typer.Option(1, help="Model instances (Triton's instance_group count)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
):
    """Print a config.pbtxt for NVIDIA Triton's onnxruntime backend, op library included."""
    if output is not None:
        refuse_overwrite(output, [model], force)
    proto = load_model(model)
    text = triton_config(proto, name=name or model.stem.replace(".", "_"), model_filename=model.name,
                         library=library or ops.library_path().resolve(), threads=threads, instances=instances)
    if output is None:
        typer.echo(text, nl=False)
        return
    atomic_write_bytes(output, text.encode())
    typer.echo(f"wrote {output}")
