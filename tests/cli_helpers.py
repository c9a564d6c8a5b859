"""Running the CLI in-process in tests, and the one-line error every bad input must get."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile

from waveopt.cli import main


def cli(capsys, *args):
    """Run the CLI in-process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli_captured(*args):
    """Run the CLI in-process without a pytest fixture: (exit code, stdout, stderr).

    stderr includes what C++ code (ONNX Runtime's logger) writes to file descriptor 2,
    which ``capsys`` cannot see.
    """
    out, err = io.StringIO(), io.StringIO()
    with _fd_captured(2) as native_err, _fd_captured(1) as native_out:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in args])
    return code, native_out() + out.getvalue(), native_err() + err.getvalue()


@contextlib.contextmanager
def _fd_captured(fd: int):
    """Redirect file descriptor ``fd`` to a temp file; yields a function returning its text."""
    text = {"value": ""}
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = os.dup(fd)
        (sys.stdout if fd == 1 else sys.stderr).flush()
        os.dup2(sink.fileno(), fd)
        try:
            yield lambda: text["value"]
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            text["value"] = sink.read().decode("utf-8", "replace")


def assert_one_line_error(code, err, *needles):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
