"""A Chrome-trace file (chrome://tracing, ui.perfetto.dev) of the profiled runs, kernels named by module.

ORT's profile is already in Chrome's trace-event format; this keeps only the measured runs
(``model_run`` spans and kernel spans, warm-up dropped), names each kernel
``module: node`` with ``cat`` = its module, keeps op, shapes and module as args, and puts
each profiled model in its own process (pid 1, 2, ... named after the file), so two
compared models open side by side.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from waveopt.errors import WaveoptError

__all__ = ["TraceWriter"]

_KERNEL_SUFFIX = "_kernel_time"


class TraceWriter:
    """Writes events as they come; :meth:`close` moves the finished file into place atomically."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise WaveoptError(f"--trace {self.path} is a directory")
        if not self.path.parent.exists():
            raise WaveoptError(f"--trace folder {self.path.parent} does not exist")
        self._tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        try:
            self._file = open(self._tmp, "w")
        except OSError as exc:
            raise WaveoptError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self._file.write("[\n")
        self._first = True

    def model_events(self, pid: int, name: str, labels: dict[str, str]):
        """An ``on_event`` callback for one model's ORT events, in process ``pid``."""
        self._write({"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": name}})

        def on_event(event: dict) -> None:
            args = event.get("args", {})
            name = event.get("name", "")
            out = {"ph": "X", "pid": pid, "tid": event.get("tid", 0), "ts": event["ts"], "dur": event["dur"]}
            if name.endswith(_KERNEL_SUFFIX):
                node = name[: -len(_KERNEL_SUFFIX)]
                module = labels.get(node, "unattributed")
                out.update(name=f"{module}: {node}", cat=module,
                           args={"module": module, "op": args.get("op_name", ""),
                                 "inputs": args.get("input_type_shape", []),
                                 "outputs": args.get("output_type_shape", [])})
            else:
                out.update(name=name, cat=event.get("cat", "Session"), args={})
            self._write(out)

        return on_event

    def close(self) -> None:
        self._file.write("\n]\n")
        self._file.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)

    def _write(self, event: dict) -> None:
        self._file.write(("" if self._first else ",\n") + json.dumps(event, separators=(",", ":")))
        self._first = False
