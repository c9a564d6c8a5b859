"""Draw BENCHMARKS.md's speed comparison as a bar chart: samples/s per model form, real-time line.

    .venv/bin/python scripts/plot_benchmarks.py [--benchmarks BENCHMARKS.md] [-o docs/speed.png]

Reads the first Markdown table with the columns mode, batch, target, weights and samples/s
(the quantization section's full run: native fp32 / int16 / int8 and portable fp32 / int8,
RAW and MOL, batch 1 and 16 folds, one thread) and draws one bar per row. Needs the extra
``waveopt[plot]`` (matplotlib).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from waveopt.errors import WaveoptError
from waveopt.plots import plot_speed_chart

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ("mode", "batch", "target", "weights", "samples/s")
SAMPLE_RATE = 22050  # the demo model's, fatchord's


def markdown_tables(text: str) -> list[list[dict[str, str]]]:
    """Every pipe table of ``text`` as a list of {header: cell} rows."""
    tables, lines = [], text.splitlines()
    i = 0
    while i + 1 < len(lines):
        header, rule = lines[i].strip(), lines[i + 1].strip()
        if header.startswith("|") and rule.startswith("|") and set(rule) <= set("|-: "):
            names = [c.strip() for c in header.strip("|").split("|")]
            rows, i = [], i + 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                rows.append(dict(zip(names, cells)))
                i += 1
            tables.append(rows)
        else:
            i += 1
    return tables


def speed_rows(text: str) -> list[tuple[str, float]]:
    """(label, samples/s) of the first table that has all of :data:`COLUMNS`."""
    for table in markdown_tables(text):
        if table and all(c in table[0] for c in COLUMNS):
            return [(f"{r['mode']} {r['batch']:>5}  {r['target']} {r['weights']}",
                     float(r["samples/s"].replace(",", ""))) for r in table]
    raise WaveoptError(f"no table with the columns {', '.join(COLUMNS)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("-o", "--output", type=Path, default=REPO / "docs" / "speed.png")
    args = parser.parse_args(argv)
    try:
        rows = speed_rows(args.benchmarks.read_text())
        args.output.parent.mkdir(parents=True, exist_ok=True)
        plot_speed_chart(rows, args.output, realtime=SAMPLE_RATE,
                         title="fatchord-size demo model, one thread: samples/s per form (BENCHMARKS.md)")
    except (WaveoptError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.output} ({len(rows)} bars)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
