"""The README's library snippets, run verbatim in a fresh interpreter (issue 13, bug 2)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from waveopt import ops
from waveopt.pipeline import optimize

README = Path(__file__).resolve().parent.parent / "README.md"


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_import_waveopt_gives_ops_without_importing_torch(tmp_path):
    result = _run("import sys, waveopt; print(waveopt.ops.library_path()); print('torch' in sys.modules)", tmp_path)
    assert result.returncode == 0, result.stderr
    path, torch_loaded = result.stdout.split()
    assert path.endswith("libwaveopt_ops.so") and torch_loaded == "False"


@pytest.mark.skipif(not ops.built(), reason="native ops not built (make native)")
def test_readme_ort_snippet_runs_verbatim(tmp_path, exports):
    snippet = re.search(r"```python\n(import onnxruntime as ort, waveopt\n.*?)```", README.read_text(), re.S).group(1)
    native = optimize(exports("raw"), preset="native").model
    onnx.save(native, tmp_path / "wavernn.native.onnx")
    result = _run(snippet + "print(sess.get_inputs()[0].name)\n", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("mels")
