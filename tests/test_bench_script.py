"""scripts/bench.py runs end to end on a tiny model and its equivalence check passes."""

import importlib.util
import re
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_bench_script_on_a_tiny_model(capsys):
    bench = load_bench()
    status = bench.main(["--tiny", "--frames", "1", "--repeats", "1", "--modes", "raw", "--markdown"])
    out = capsys.readouterr().out
    assert status == 0, out
    # The equivalence check compared each ORT variant with eager and passed.
    checks = [line for line in out.splitlines() if "vs eager:" in line]
    assert len(checks) == 2 and all("vs eager: ok," in line for line in checks), out
    # One table row per variant, each with a positive rate and the graph's MACs per sample.
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| RAW |"):
            rows[cells[1]] = cells
    assert set(rows) == {"eager", "ORT per sample", "ORT Loop"}, out
    # Per step, rnn = fc = 32 and aux = 16 / 4: I, rnn1, rnn2 (input + hidden), fc1, fc2, fc3 (512 classes).
    rnn, aux = 32, 4
    macs = ((1 + 80 + aux) * rnn + 6 * rnn * rnn + 3 * rnn * (rnn + aux) + 3 * rnn * rnn
            + 2 * (rnn + aux) * rnn + rnn * 512)
    for cells in rows.values():
        assert float(cells[2].replace(",", "")) > 0
        assert cells[6] == f"{macs:,}"
    assert rows["eager"][5] == "1.00x"
    assert re.search(r"command: `.*--tiny", out)
