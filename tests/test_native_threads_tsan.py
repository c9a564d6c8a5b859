"""The thread team under ThreadSanitizer (run by `make native-sanitize`, i.e. CI).

custom_ops built with -DWAVEOPT_SANITIZE=thread; `waveopt_kernel_test threads` runs the loop
on teams of 1-4 members (fp32, int16, int8; even, uneven and empty shares; several jobs per
run), two callers on one team at once, and the team's start and shutdown. Any data race,
lock-order problem or misuse of a mutex fails it (halt_on_error).
"""

from __future__ import annotations

import os
import subprocess

import pytest

from waveopt import ops

SANITIZE = pytest.mark.skipif(os.environ.get("WAVEOPT_SANITIZE_TESTS") != "1",
                              reason="set WAVEOPT_SANITIZE_TESTS=1 (builds custom_ops/build/tsan)")


@SANITIZE
def test_thread_team_under_thread_sanitizer():
    build_dir = ops.build(sanitize="thread")
    env = dict(os.environ, TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1")
    result = subprocess.run([str(build_dir / "waveopt_kernel_test"), "threads"], capture_output=True, text=True,
                            env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert "OK: 0 failure(s)" in result.stdout
    assert "ThreadSanitizer" not in result.stderr
