"""The native op library ``libwaveopt_ops.so`` (``custom_ops/``): its domain, where it is,
how to build it, and registering it with session options. No sessions here
(:mod:`waveopt.runtime` builds them); :mod:`waveopt.ops` is the public face.
"""


from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .errors import WaveoptError

__all__ = ["DOMAIN", "library_path", "build", "built", "register", "require_library"]

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


def require_library() -> Path:
    path = library_path()
    if not path.is_file():
        raise WaveoptError(f"native ops library not built: {path} is missing (run `waveopt ops build`)")
    return path


def register(options):
    """Register the library with an ``onnxruntime.SessionOptions``; returns the options."""
    options.register_custom_ops_library(str(require_library()))
    return options
