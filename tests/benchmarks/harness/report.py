"""The side-by-side table: rows, comparison with the direct upstream, and the
Markdown / JSON files under bench-results/."""

from __future__ import annotations

import json
import os
import platform
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.benchmarks.harness.figures import ScriptFigures


@dataclass
class Row:
    system: str
    upstream: str  # sim variant: zero | realistic
    mode: str  # non-stream | stream
    load: str  # "peak (wrk c=64)" | "500/s" | "2x peak = 3000/s"
    tool: str  # wrk | open-loop | -
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    ttft_p50_ms: float | None = None
    added_p50_ms: float | None = None
    added_ttft_p50_ms: float | None = None
    rps_ratio: float | None = None
    errors: int | None = None
    error_detail: dict[str, Any] = field(default_factory=dict)
    shed_429: int | None = None
    peak_rss_mb: float | None = None
    cpu_cores: float | None = None
    # CPU spent by other processes on the SUT's core during the row (noise)
    foreign_cpu_on_sut_core: float | None = None
    note: str = ""

    def key(self) -> tuple[str, str, str]:
        # "2x peak" rows have no direct counterpart on purpose: their rate
        # depends on the system's own peak.
        return (self.upstream, self.mode, self.load)


def compare_with_direct(rows: list[Row]) -> None:
    direct = {r.key(): r for r in rows if r.system == "direct" and r.rps is not None}
    peak_direct = {(r.upstream, r.mode): r for r in rows if r.system == "direct" and r.tool == "wrk"}
    for r in rows:
        if r.system == "direct" or r.rps is None:
            continue
        d = direct.get(r.key())
        if d is None and r.tool == "wrk":
            d = peak_direct.get((r.upstream, r.mode))
        if d is None:
            continue
        if r.p50_ms is not None and d.p50_ms is not None:
            r.added_p50_ms = round(r.p50_ms - d.p50_ms, 3)
        if r.ttft_p50_ms is not None and d.ttft_p50_ms is not None:
            r.added_ttft_p50_ms = round(r.ttft_p50_ms - d.ttft_p50_ms, 3)
        if d.rps:
            r.rps_ratio = round(r.rps / d.rps, 4)


def _num(v: float | None, fmt: str = "{:.2f}", suffix: str = "") -> str:
    return "-" if v is None else fmt.format(v) + suffix


def _signed(v: float | None) -> str:
    return "-" if v is None else f"{v:+.2f} ms"


COLUMNS = [
    "system",
    "upstream",
    "mode",
    "load",
    "RPS",
    "p50",
    "p99",
    "TTFT p50",
    "added p50 vs direct",
    "added TTFT p50",
    "RPS ratio vs direct",
    "errors",
    "peak RSS",
    "CPU cores used",
    "other CPU on SUT core",
]


def row_cells(r: Row) -> list[str]:
    if r.rps is None:  # a system or a measurement that could not run
        return [r.system, r.upstream, r.mode, r.load, *(["-"] * 9), r.note or "not run"]
    errors = str(r.errors or 0)
    if r.shed_429:
        errors += f" (429: {r.shed_429})"
    return [
        r.system,
        r.upstream,
        r.mode,
        r.load,
        f"{r.rps:,.0f}",
        _num(r.p50_ms, suffix=" ms"),
        _num(r.p99_ms, suffix=" ms"),
        _num(r.ttft_p50_ms, suffix=" ms"),
        _signed(r.added_p50_ms),
        _signed(r.added_ttft_p50_ms),
        _num(r.rps_ratio, "{:.3f}"),
        errors,
        _num(r.peak_rss_mb, "{:.0f}", " MB"),
        _num(r.cpu_cores, "{:.2f}"),
        _num(r.foreign_cpu_on_sut_core, "{:.2f}"),
        *([r.note] if r.note else []),
    ]


def markdown_table(rows: list[Row]) -> str:
    cols = [*COLUMNS, "note"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = row_cells(r)
        if r.rps is None:  # the not-run form: dashes, then the reason
            cells = [*cells[:4], *(["-"] * (len(COLUMNS) - 4)), cells[-1]]
        cells += [""] * (len(cols) - len(cells))
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def text_table(rows: list[Row]) -> str:
    table = [[*COLUMNS, "note"]] + [
        [*row_cells(r)[:4], *(["-"] * (len(COLUMNS) - 4)), row_cells(r)[-1]]
        if r.rps is None
        else row_cells(r)
        for r in rows
    ]
    width = max(len(t) for t in table)
    table = [t + [""] * (width - len(t)) for t in table]
    widths = [max(len(t[i]) for t in table) for i in range(width)]
    out = []
    for n, t in enumerate(table):
        out.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(t)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def machine_info() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gb": round(mem_gb, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def figures_markdown(figs: list[ScriptFigures]) -> str:
    if not figs:
        return "_not run (--no-figures)_"
    lines = []
    for f in figs:
        args = f" `{' '.join(f.args)}`" if f.args else ""
        took = f", {f.seconds:.0f} s" if f.seconds else ""
        lines.append(f"- **{f.script}**{args} ({f.about}): {f.status}{took}")
        for k, v in f.figures.items():
            lines.append(f"    - {k}: {v}")
        if f.output_tail and (f.status != "ok" or not f.figures):
            lines.append("")
            lines.append("  ```")
            lines += [f"  {ln}" for ln in f.output_tail[-20:]]
            lines.append("  ```")
    return "\n".join(lines)


def figures_text(figs: list[ScriptFigures]) -> str:
    return figures_markdown(figs).replace("  ```\n", "").replace("\n  ```", "")


def write_results(
    out_dir: Path,
    stamp: str,
    meta: dict[str, Any],
    rows: list[Row],
    figs: list[ScriptFigures],
    kind: str = "bench",
) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "meta": meta,
        "columns": COLUMNS,
        "rows": [asdict(r) for r in rows],
        "figures": [asdict(f) for f in figs],
    }
    md = [f"# Nexus benchmark, {meta.get('started_at', stamp)}", ""]
    md += [f"- command: `{meta.get('command', '')}`"]
    mi = meta.get("machine", {})
    md += [
        f"- machine: {mi.get('cpu', '?')}, {mi.get('cpus', '?')} CPUs, {mi.get('memory_gb', '?')} GB, "
        f"Linux {mi.get('kernel', '?')}, Python {mi.get('python', '?')}; load average at start "
        f"{mi.get('load_average_at_start')}",
        f"- pinning: {meta.get('pinning', '')}",
    ]
    for k in ("method", "upstreams", "systems", "nexus_features", "caveats"):
        v = meta.get(k)
        if isinstance(v, dict):
            md.append(f"- {k.replace('_', ' ')}:")
            md += [f"    - {a}: {b}" for a, b in v.items()]
        elif isinstance(v, list):
            md.append(f"- {k.replace('_', ' ')}:")
            md += [f"    - {x}" for x in v]
        elif v:
            md.append(f"- {k.replace('_', ' ')}: {v}")
    md += ["", markdown_table(rows), ""]
    md += ["## Event pipeline and per-feature figures", "", figures_markdown(figs), ""]
    if meta.get("profile"):
        md += ["## Profile", "", f"{meta['profile']}", ""]
    json_path = out_dir / f"{kind}-{stamp}.json"
    md_path = out_dir / f"{kind}-{stamp}.md"
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    md_path.write_text("\n".join(md))
    latest = "latest" if kind == "bench" else f"{kind}-latest"
    shutil.copyfile(json_path, out_dir / f"{latest}.json")
    shutil.copyfile(md_path, out_dir / f"{latest}.md")
    return md_path, json_path
