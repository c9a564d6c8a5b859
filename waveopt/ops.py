"""waveopt's native ONNX Runtime ops (``custom_ops/``): build, locate, load, ask what runs.

The shared library ``libwaveopt_ops.so`` registers the domain ``waveopt.ops`` (version 1):

- ``WaveRNNLoop``: the whole WaveRNN recurrence for T steps in one kernel;
- ``FusedDense``: ``act(concat(x_1, ..., x_m) · W + b)``;
- ``WaveoptInfo``: no inputs, a JSON string saying which kernels this process runs and why.

The kernels (scalar reference, AVX2+FMA, AVX-512) are chosen once per process, when the
library is first registered: the best the CPU has, or ``WAVEOPT_ISA=scalar|avx2|avx512|avx512vnni``
(asking for more than the CPU has makes registration fail). ::

    from waveopt import ops
    ops.build()                                   # cmake configure + build (Release, -O3)
    sess = ort.InferenceSession(path, ops.session_options(threads=1))
    ops.info()["isa"]                             # "avx512", "avx2" or "scalar"
"""

from __future__ import annotations

import json
import subprocess
import sys

import onnxruntime as ort
from onnx import TensorProto, helper

from waveopt.errors import WaveoptError
from waveopt.native_library import ENV_LIBRARY, LIBRARY_NAME, DOMAIN, build, built, library_path, register, require_library
from waveopt.runtime import native_session_options, session

__all__ = ["DOMAIN", "ENV_LIBRARY", "LIBRARY_NAME", "library_path", "build", "built", "info", "session_options", "register",
           "info_model"]


def session_options(threads: int = 1) -> ort.SessionOptions:
    """waveopt's usual CPU session options (``runtime.session_options``) with the ops registered."""
    return native_session_options(threads)


def info_model():
    """A one-node model running ``WaveoptInfo`` (output ``info``: a string tensor [1])."""
    node = helper.make_node("WaveoptInfo", [], ["info"], domain=DOMAIN)
    graph = helper.make_graph([node], "waveopt_info", [],
                              [helper.make_tensor_value_info("info", TensorProto.STRING, [1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(DOMAIN, 1)],
                             ir_version=9)


def info(fresh_process: bool = False) -> dict:
    """What the library says about itself, plus where it is and which ORT runs it:
    ``{"isa", "requested", "reason", "cpu": {...}, "ort_version", "ort_api", "library", ...}``.

    The choice of kernels is made once per process; ``fresh_process=True`` asks a new
    Python process (so a changed ``WAVEOPT_ISA`` takes effect).
    """
    if fresh_process:
        code = "import json; from waveopt import ops; print(json.dumps(ops.info()))"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise WaveoptError(lines[-1] if lines else "asking the native ops for info failed")
        return json.loads(result.stdout.strip().splitlines()[-1])
    path = require_library()
    try:
        sess = session(info_model(), threads=1, native=True)
    except Exception as exc:  # registration errors (WAVEOPT_ISA) surface here
        raise WaveoptError(f"loading {path}: {' '.join(str(exc).split())}") from None
    data = json.loads(str(sess.run(None, {})[0][0]))
    data["library_path"] = str(path)
    data["onnxruntime_python"] = ort.__version__
    return data
