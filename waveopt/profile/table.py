"""Plain-text tables of a profile, of its slowest nodes, and of two profiles side by side."""

from __future__ import annotations

from .bandwidth import MB
from .profiler import Profile

__all__ = ["format_profile", "format_nodes", "format_comparison", "comparison_rows", "fmt_us"]

_WEIGHTS_SHOWN = 4096  # bytes


def fmt_us(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def format_profile(p: Profile) -> str:
    per = f"us/{p.unit}"
    lines = [f"model        {p.model}: {p.kind}",
             f"inputs       {p.inputs}",
             f"runs         {p.runs} profiled after {p.warmup} warm-up, {p.threads} thread(s); "
             + (f"{p.steps_per_run:,} steps x {p.sequences} sequence(s) = {p.samples_per_run:,} samples per run"
                if p.unit == "sample" else "no per-sample times"),
             f"wall         {fmt_us(p.wall_unprofiled_us)} {per} without the profiler, "
             f"{fmt_us(p.wall_profiled_us)} {per} profiled ({_ratio(p.wall_profiled_us, p.wall_unprofiled_us)})"]
    if p.profiler_cost_us is not None:
        lines.append(f"est.         profiled kernel time minus {p.profiler_cost_us:.2f} us per kernel call (ORT's "
                     "profiler cost, calibrated between runs), uncertain by ~0.5 us per call; "
                     "loop overhead est. = the unprofiled rest")
    lines.append("")
    header = ("module", f"profiled {per}", f"est. {per}", "%", f"kernels/{p.unit}", f"MACs/{p.unit}", "GFLOP/s",
              "weights", "GB/s", "read limit")
    rows = [header]
    flagged = False
    for r in p.rows:
        weights = r.weight_bytes >= _WEIGHTS_SHOWN  # not the scalars of elementwise ops
        gflops = _rate(r.gflops if r.macs else None, p.limits.fma_gflops * p.threads)
        gbps = _rate(r.gbps, (r.read_limit_gbps or 0) * p.threads) if weights else "-"
        flagged |= gflops.endswith("!") or gbps.endswith("!")
        limit = f"{r.read_limit_gbps:.1f} @{r.read_limit_size // MB} MB" if weights and r.read_limit_gbps else "-"
        rows.append((r.module, fmt_us(r.profiled_us), fmt_us(r.est_us), _pct(p.percent(r)),
                     f"{r.kernel_calls:.2f}", _int(r.macs), gflops, _bytes(r.weight_bytes) if weights else "-", gbps,
                     limit))
    total_calls = sum(r.kernel_calls for r in p.rows)
    total_macs = sum(r.macs or 0 for r in p.rows)
    rows.append(("total", fmt_us(sum(r.profiled_us for r in p.rows)),
                 fmt_us(sum(r.est_us or 0 for r in p.rows)) if p.profiler_cost_us is not None else "-",
                 _pct(sum(p.percent(r) or 0 for r in p.rows)), f"{total_calls:.2f}", _int(total_macs),
                 _num(2 * total_macs / p.total_us / 1e3 if p.total_us > 0 else None),
                 _bytes(p.total_weight_bytes), "", ""))
    lines += _table(rows)
    reads = ", ".join(f"{rate:.1f} GB/s @{size // MB} MB" for size, rate in sorted(p.limits.read_gbps.items()))
    lines.append("")
    lines.append(f"limits       one core: FMA peak {p.limits.fma_gflops:.0f} GFLOP/s (ORT sgemm); streaming read "
                 f"{reads} (np.max)")
    if flagged:
        lines.append("note         ! above the machine's limit: that time is below what the estimate resolves")
    lines += [f"note         {note}" for note in p.notes]
    return "\n".join(lines)


def format_nodes(p: Profile, top: int = 25) -> str:
    per = f"us/{p.unit}"
    rows = [("node", "op", "module", "graph", f"profiled {per}", f"est. {per}", f"calls/{p.unit}")]
    for n in p.nodes[:top]:
        rows.append((n.name, n.op, n.module, n.graph, fmt_us(n.profiled_us), fmt_us(n.est_us), f"{n.calls:.2f}"))
    rest = p.nodes[top:]
    if rest:
        rows.append((f"({len(rest)} more)", "", "", "", fmt_us(sum(n.profiled_us for n in rest)),
                     fmt_us(sum(n.est_us or 0 for n in rest)), f"{sum(n.calls for n in rest):.2f}"))
    return "\n".join(_table(rows))


def comparison_rows(a: Profile, b: Profile) -> list[dict]:
    """Module by module: time per unit of each (the estimate when both have one) and b / a.

    No ratio where either time is not positive (an estimate below the correction's resolution).
    """
    use_est = a.profiler_cost_us is not None and b.profiler_cost_us is not None
    modules = [r.module for r in a.rows] + [r.module for r in b.rows if r.module not in {x.module for x in a.rows}]
    rows = []
    for module in modules:
        ra = next((r for r in a.rows if r.module == module), None)
        rb = next((r for r in b.rows if r.module == module), None)
        ta = (ra.us if use_est else ra.profiled_us) if ra else 0.0
        tb = (rb.us if use_est else rb.profiled_us) if rb else 0.0
        rows.append({"module": module, "a_us": ta, "b_us": tb, "ratio": tb / ta if ta > 0 and tb > 0 else None})
    total_a = a.total_us if use_est else a.wall_profiled_us
    total_b = b.total_us if use_est else b.wall_profiled_us
    rows.append({"module": "total (wall)", "a_us": total_a, "b_us": total_b,
                 "ratio": total_b / total_a if total_a > 0 else None})
    return rows


def format_comparison(a: Profile, b: Profile) -> str:
    which = "est." if a.profiler_cost_us is not None and b.profiler_cost_us is not None else "profiled"
    unit = a.unit if a.unit == b.unit else f"{a.unit} / {b.unit}"
    rows = [("module", f"A us/{unit}", f"B us/{unit}", "B/A")]
    for r in comparison_rows(a, b):
        rows.append((r["module"], fmt_us(r["a_us"]), fmt_us(r["b_us"]),
                     "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"))
    lines = [f"A  {a.model}: {a.kind}", f"B  {b.model}: {b.kind}",
             f"times: {which} us per {unit}, {a.runs} / {b.runs} profiled runs, "
             f"{a.threads} / {b.threads} thread(s)", ""]
    return "\n".join(lines + _table(rows))


def _ratio(profiled: float, plain: float) -> str:
    return f"the profiler makes it {profiled / plain:.1f}x slower" if plain > 0 else "n/a"


def _rate(value: float | None, limit: float) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" + ("!" if limit and value > limit else "")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _int(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _bytes(value: int) -> str:
    if not value:
        return "-"
    if value >= MB:
        return f"{value / MB:.1f} MB"
    return f"{value / 1024:.0f} KB" if value >= 1024 else f"{value} B"


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]).rstrip()
            for row in rows]
