"""Each later issue's own benchmark script, run as it is and its printed
figures collected: the event pipeline (publish, projection, replay), hooks,
quota check, ...  A script that is not in the checkout yet is reported as
missing; one that fails or overruns is reported with its exit status and the
tail of its output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.benchmarks.harness.loadgen import REPO
from tests.benchmarks.harness.procs import pinned

BENCH_DIR = REPO / "tests" / "benchmarks"

# script -> what it measures (the issue it belongs to)
SCRIPTS: dict[str, str] = {
    "gateway_overhead.py": "gateway RPS and added latency vs the sim (event spine)",
    "projection_throughput.py": "event pipeline: publish rate, projection rate (Postgres, DuckDB), replay",
    "hooks_latency.py": "compliance hooks with the default packs",
    "quota_check.py": "quota / rate check against Valkey",
}

# "name: 1,234.5 unit" or "name = 12 ms" style lines
_FIGURE_LINE = re.compile(
    r"^\s*([A-Za-z][\w .()/%@+-]{1,80}?)\s*[:=]\s*(-?[\d,]+(?:\.\d+)?)\s*([^\s].{0,40})?$"
)


@dataclass
class ScriptFigures:
    script: str
    about: str
    status: str  # ok | missing | failed (exit N) | timed out after Ns
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)
    output_tail: list[str] = field(default_factory=list)


def _accepts_quick(path: Path, env: dict[str, str]) -> bool:
    try:
        proc = subprocess.run(
            [sys.executable, str(path), "--help"],
            capture_output=True,
            timeout=30,
            cwd=REPO,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return b"--quick" in proc.stdout


def parse_figures(text: str) -> dict[str, Any]:
    """A JSON object printed on a line of its own wins (the last one);
    otherwise ``name: number unit`` lines are collected."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                return obj
    figures: dict[str, Any] = {}
    for line in text.splitlines():
        m = _FIGURE_LINE.match(line)
        if m:
            name, number, unit = m.group(1).strip(), m.group(2).replace(",", ""), (m.group(3) or "").strip()
            figures[name] = f"{number} {unit}".strip()
    return figures


def run_scripts(
    *, quick: bool, timeout_s: float, cpus: tuple[int, ...] | None, only: list[str] | None = None
) -> list[ScriptFigures]:
    import time

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    out: list[ScriptFigures] = []
    for name, about in SCRIPTS.items():
        if only is not None and name not in only:
            continue
        path = BENCH_DIR / name
        if not path.exists():
            out.append(ScriptFigures(name, about, "missing (not in this checkout yet)"))
            print(f"  {name}: missing", flush=True)
            continue
        argv = [sys.executable, str(path)]
        if quick and _accepts_quick(path, env):
            argv.append("--quick")
        print(f"  {name}: running (at most {timeout_s:.0f}s) ...", flush=True)
        t0 = time.monotonic()
        try:
            proc = subprocess.run(
                pinned(argv, cpus), capture_output=True, timeout=timeout_s, cwd=REPO, env=env, check=False
            )
        except subprocess.TimeoutExpired as exc:
            tail = (exc.stdout or b"").decode(errors="replace").strip().splitlines()[-8:]
            out.append(ScriptFigures(name, about, f"timed out after {timeout_s:.0f}s", timeout_s, {}, tail))
            continue
        secs = time.monotonic() - t0
        text = proc.stdout.decode(errors="replace")
        tail = [ln for ln in text.strip().splitlines() if ln.strip()][-20:]
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip().splitlines()[-6:]
            out.append(ScriptFigures(name, about, f"failed (exit {proc.returncode})", secs, {}, tail + err))
            continue
        out.append(ScriptFigures(name, about, "ok", secs, parse_figures(text), tail))
    return out
