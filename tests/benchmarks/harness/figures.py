"""Each later issue's own benchmark script, run as it is and its printed
figures collected: the event pipeline (publish, projection, replay), hooks,
quota check, ...  A script that is not in the checkout yet is reported as
missing; one that fails or overruns is reported with its exit status and the
tail of its output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.benchmarks.harness import procs
from tests.benchmarks.harness.loadgen import REPO
from tests.benchmarks.harness.procs import pinned, set_autogroup_nice

BENCH_DIR = REPO / "tests" / "benchmarks"

# script -> what it measures (the issue it belongs to)
SCRIPTS: dict[str, str] = {
    "gateway_overhead.py": "gateway RPS and added latency vs the sim (event spine)",
    "projection_throughput.py": "event pipeline: publish rate, projection rate (Postgres, DuckDB), replay",
    "audit_throughput.py": "audit processor: hash-chained records/s into Postgres",
    "hooks_latency.py": "compliance hooks with the default packs",
    "quota_check.py": "quota / rate check against Valkey",
    "cache_hit.py": "exact-cache hit latency",
    "semantic_cache.py": "semantic cache: index top-1 over 100k entries, embed time per prompt",
    "translation_overhead.py": "provider format translation",
    "gateway_hooks_latency.py": "hooks on the gateway's request path",
    "instructions.py": "gateway CPU per request in instructions (callgrind), by feature set",
}


def discover() -> dict[str, str]:
    """The known scripts (reported as missing when absent) plus any other
    benchmark script a later issue drops into tests/benchmarks/."""
    found = dict(SCRIPTS)
    for path in sorted(BENCH_DIR.glob("*.py")):
        if path.name not in found and path.name != "run.py" and not path.name.startswith(("test_", "_")):
            found[path.name] = "(no description: a later issue's own benchmark)"
    return found


# Arguments that size a script's run, passed only when its --help lists the
# flag: the full run asks for the figure (replay of 1M events), the
# quick run for a small one.
SIZE_ARGS: dict[str, dict[str, list[str]]] = {
    "projection_throughput.py": {"full": ["--count", "1000000"], "quick": ["--count", "20000"]},
    "audit_throughput.py": {"quick": ["--count", "20000"]},
    "quota_check.py": {"quick": ["--requests", "2000", "--seconds", "3"]},
    "instructions.py": {"quick": ["--requests", "50", "--features", "production"]},
}

# A longer leash for scripts whose full-size run is long by nature.
FULL_TIMEOUT_S: dict[str, float] = {
    "projection_throughput.py": 900.0,
    "semantic_cache.py": 600.0,
    "instructions.py": 600.0,
}


@dataclass
class ScriptFigures:
    script: str
    about: str
    status: str  # ok | missing | failed (exit N) | timed out after Ns
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    output_tail: list[str] = field(default_factory=list)


def _help_text(path: Path, env: dict[str, str]) -> str:
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
        return ""
    return proc.stdout.decode(errors="replace")


def size_args(name: str, quick: bool, help_text: str) -> list[str]:
    wanted = list(SIZE_ARGS.get(name, {}).get("quick" if quick else "full", []))
    if quick and "--quick" in help_text:
        wanted = ["--quick"]
    out: list[str] = []
    i = 0
    while i < len(wanted):
        flag = wanted[i]
        takes_value = i + 1 < len(wanted) and not wanted[i + 1].startswith("--")
        if flag in help_text:
            out += wanted[i : i + (2 if takes_value else 1)]
        i += 2 if takes_value else 1
    return out


def parse_figures(text: str) -> dict[str, Any]:
    """A JSON object printed on a line of its own (the last one) is taken as
    the script's figures; free text is kept verbatim in ``output_tail``."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                return obj
    return {}


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # SIGINT first: a Python script's finally blocks run (KeyboardInterrupt),
    # so it can drop the streams and databases it made; then harder.
    for sig, grace in ((signal.SIGINT, 30), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def run_scripts(
    *, quick: bool, timeout_s: float, cpus: tuple[int, ...] | None, only: list[str] | None = None
) -> list[ScriptFigures]:
    import time

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    out: list[ScriptFigures] = []
    for name, about in discover().items():
        if only is not None and name not in only:
            continue
        path = BENCH_DIR / name
        if not path.exists():
            out.append(ScriptFigures(name, about, "missing (not in this checkout yet)"))
            print(f"  {name}: missing", flush=True)
            continue
        argv = [sys.executable, str(path), *size_args(name, quick, _help_text(path, env))]
        limit = timeout_s if quick else max(timeout_s, FULL_TIMEOUT_S.get(name, 0.0))
        print(f"  {' '.join(argv[1:])}: running (at most {limit:.0f}s) ...", flush=True)
        t0 = time.monotonic()
        # Its own session, so a timeout ends whatever the script started too.
        proc = subprocess.Popen(
            pinned(argv, cpus),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            env=env,
            start_new_session=True,
        )
        if procs._NICE:  # --nice: its new session is its own autogroup
            set_autogroup_nice(proc.pid, procs._NICE)
        try:
            stdout, stderr = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            stdout, _ = proc.communicate()
            tail = stdout.decode(errors="replace").strip().splitlines()[-8:]
            out.append(
                ScriptFigures(
                    name,
                    about,
                    f"timed out after {limit:.0f}s",
                    limit,
                    args=argv[2:],
                    output_tail=tail,
                )
            )
            continue
        secs = time.monotonic() - t0
        text = stdout.decode(errors="replace")
        tail = [ln for ln in text.strip().splitlines() if ln.strip()][-20:]
        if proc.returncode != 0:
            err = stderr.decode(errors="replace").strip().splitlines()[-6:]
            out.append(
                ScriptFigures(
                    name,
                    about,
                    f"failed (exit {proc.returncode})",
                    secs,
                    args=argv[2:],
                    output_tail=tail + err,
                )
            )
            continue
        out.append(
            ScriptFigures(name, about, "ok", secs, parse_figures(text), args=argv[2:], output_tail=tail)
        )
    return out
