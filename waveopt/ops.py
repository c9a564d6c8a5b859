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
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .errors import WaveoptError

__all__ = ["DOMAIN", "library_path", "build", "built", "info", "session_options", "register", "info_model"]

DOMAIN = "waveopt.ops"
LIBRARY_NAME = "libwaveopt_ops.so"
ENV_LIBRARY = "WAVEOPT_OPS_LIBRARY"

SOURCE_DIR = Path(__file__).resolve().parent.parent / "custom_ops"
BUILD_DIR = SOURCE_DIR / "build" / "release"


def library_path() -> Path:
    """Where the built library is: ``$WAVEOPT_OPS_LIBRARY`` if set, else the Release build dir
    of the source tree (``custom_ops/build/release/libwaveopt_ops.so``, gitignored)."""
    override = os.environ.get(ENV_LIBRARY)
    return Path(override) if override else BUILD_DIR / LIBRARY_NAME


def built() -> bool:
    return library_path().is_file()


def build(verbose: bool = False, build_dir: str | os.PathLike | None = None, sanitize: bool | str = False,
          jobs: int | None = None) -> Path:
    """Configure and build the library (CMake, Release, -O3) and return the build directory.

    Incremental: a second call with nothing changed only checks timestamps. ONNX Runtime's
    headers come from ``$ORT_INCLUDE_DIR`` or are fetched once into ~/.cache/waveopt
    (custom_ops/fetch_ort_headers.sh). ``sanitize=True`` builds the ASan+UBSan variant into
    ``custom_ops/build/sanitize``, ``sanitize="thread"`` the ThreadSanitizer one into
    ``custom_ops/build/tsan`` (for ``waveopt_kernel_test``; not for loading into Python).
    """
    if not (SOURCE_DIR / "CMakeLists.txt").is_file():
        raise WaveoptError(f"no custom_ops/CMakeLists.txt next to the waveopt package ({SOURCE_DIR}); "
                           "the native ops build from a source checkout")
    cmake = shutil.which("cmake")
    if cmake is None:
        raise WaveoptError("cmake not found on PATH; install cmake >= 3.18 to build the native ops")
    flag, folder = {False: ("OFF", "release"), True: ("ON", "sanitize"), "thread": ("thread", "tsan")}[sanitize]
    out = Path(build_dir) if build_dir else SOURCE_DIR / "build" / folder
    configure = [cmake, "-S", str(SOURCE_DIR), "-B", str(out), "-DCMAKE_BUILD_TYPE=Release",
                 f"-DWAVEOPT_SANITIZE={flag}"]
    if os.environ.get("ORT_INCLUDE_DIR"):
        configure.append(f"-DORT_INCLUDE_DIR={os.environ['ORT_INCLUDE_DIR']}")
    jobs = jobs or min(4, os.cpu_count() or 1)
    for cmd in (configure, [cmake, "--build", str(out), "-j", str(jobs)]):
        result = subprocess.run(cmd, stdout=None if verbose else subprocess.PIPE,
                                stderr=None if verbose else subprocess.STDOUT, text=True)
        if result.returncode != 0:
            tail = "" if verbose else "\n" + "\n".join((result.stdout or "").splitlines()[-30:])
            raise WaveoptError(f"building the native ops failed: {' '.join(cmd)}{tail}")
    return out


def _require_library() -> Path:
    path = library_path()
    if not path.is_file():
        raise WaveoptError(f"native ops library not built: {path} is missing (run `waveopt ops build`)")
    return path


def register(options):
    """Register the library with an ``onnxruntime.SessionOptions``; returns the options."""
    options.register_custom_ops_library(str(_require_library()))
    return options


def session_options(threads: int = 1):
    """waveopt's usual CPU session options for a model using the ops (``runtime.session_options``
    with ``native=True``: ``threads`` for the ops' team), with the ops registered."""
    from .runtime import session_options as base_options

    return register(base_options(threads, native=True))


def info_model():
    """A one-node model running ``WaveoptInfo`` (output ``info``: a string tensor [1])."""
    from onnx import TensorProto, helper

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
    import onnxruntime as ort

    path = _require_library()
    try:
        options = session_options(1)
        sess = ort.InferenceSession(info_model().SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # registration errors (WAVEOPT_ISA) surface here
        raise WaveoptError(f"loading {path}: {' '.join(str(exc).split())}") from None
    data = json.loads(str(sess.run(None, {})[0][0]))
    data["library_path"] = str(path)
    data["onnxruntime_python"] = ort.__version__
    return data
