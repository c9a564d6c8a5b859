"""The machine line every benchmark table starts with: CPU, cores, caches, versions, native ISA.

    machine: AMD EPYC (2 cores; L2 1024K shared by CPUs 0, L3 32768K shared by CPUs 0-1),
    python 3.11.7, onnxruntime 1.32.0, torch 2.13.0+cpu, native ISA avx512vnni
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import onnxruntime

from waveopt import ops

__all__ = ["cpu_name", "caches", "machine_line"]


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def caches() -> str:
    """CPU 0's L2 and L3 sizes and sharing, from sysfs."""
    found = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            level, size = (index / "level").read_text().strip(), (index / "size").read_text().strip()
            shared = (index / "shared_cpu_list").read_text().strip()
        except OSError:
            continue
        if level in ("2", "3"):
            found.append(f"L{level} {size} shared by CPUs {shared}")
    return ", ".join(sorted(found)) or "caches unknown"


def machine_line() -> str:
    """CPU, cores, caches, python / onnxruntime / torch versions and the native ops' ISA."""
    versions = [f"python {platform.python_version()}", f"onnxruntime {onnxruntime.__version__}"]
    if "torch" in sys.modules:
        versions.append(f"torch {sys.modules['torch'].__version__}")
    if ops.built():
        versions.append(f"native ISA {ops.info().get('isa', '?')}")
    return f"machine: {cpu_name()} ({os.cpu_count()} cores; {caches()}), {', '.join(versions)}"
