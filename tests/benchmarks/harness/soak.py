"""``--soak 30m``: Nexus under a steady open-loop load for a long time, RSS
and latency recorded once per window, to show memory stays flat.  Not run in
CI; it takes as long as it is told to."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tests.benchmarks.harness import systems
from tests.benchmarks.harness.loadgen import run_openloop
from tests.benchmarks.harness.procs import CorePlan, usage
from tests.benchmarks.harness.report import machine_info
from tests.benchmarks.harness.runner import nexus_features

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smh]?)$")


def parse_duration(text: str) -> float:
    m = _DURATION.match(text.strip().lower())
    if not m:
        raise ValueError(f"not a duration: {text!r} (examples: 90s, 30m, 2h)")
    value, unit = float(m.group(1)), m.group(2) or "s"
    return value * {"s": 1, "m": 60, "h": 3600}[unit]


def run_soak(
    duration_s: float,
    rate: int,
    window_s: float,
    out_dir: Path,
    command: str,
    config_extra: dict[str, Any] | None = None,
) -> Path:
    reason = systems.nexus_available()
    if reason:
        raise SystemExit(f"soak: {reason}")
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    cores = CorePlan.for_machine()
    work = Path(tempfile.mkdtemp(prefix="nexus-soak-"))
    sim, url = systems.start_sim("upstream-sim-zero", "zero", cores.sim, work)
    samples: list[dict[str, Any]] = []
    try:
        running = systems.start_nexus({"zero": url}, cores, work, uuid.uuid4().hex[:12], {}, config_extra)
        try:
            target = running.targets["zero"]
            t0 = time.monotonic()
            print(
                f"soak: {duration_s:.0f}s at {rate}/s non-stream, one sample per {window_s:.0f}s", flush=True
            )
            while time.monotonic() - t0 < duration_s and running.alive():
                res = run_openloop(
                    target,
                    stream=False,
                    rate=rate,
                    duration_s=window_s,
                    warmup_s=0.0,
                    cpus=cores.load,
                    work_dir=work,
                )
                u = usage(running.pids)
                sample = {
                    "t_s": round(time.monotonic() - t0, 1),
                    "rss_mb": round(u.rss_bytes / 2**20, 1),
                    "rps": round(res["rps"], 1),
                    "p50_ms": res["p50_ms"],
                    "p99_ms": res["p99_ms"],
                    "errors": res["errors"],
                }
                samples.append(sample)
                print(f"  {json.dumps(sample)}", flush=True)
        finally:
            running.stop()
    finally:
        sim.stop()
        shutil.rmtree(work, ignore_errors=True)
    rss = [s["rss_mb"] for s in samples]
    # Growth after warm-up: the first window fills pools and caches.
    base = rss[1] if len(rss) > 1 else (rss[0] if rss else 0.0)
    verdict = {
        "samples": len(samples),
        "rss_first_mb": rss[0] if rss else None,
        "rss_after_warmup_mb": base,
        "rss_last_mb": rss[-1] if rss else None,
        "rss_max_mb": max(rss) if rss else None,
        "growth_after_warmup_mb": round(rss[-1] - base, 1) if rss else None,
        "errors": sum(s["errors"] for s in samples),
    }
    doc: dict[str, Any] = {
        "meta": {
            "started_at": started.isoformat(timespec="seconds"),
            "command": command,
            "machine": machine_info(),
            "pinning": cores.describe(),
            "rate": rate,
            "window_s": window_s,
            "nexus_features": nexus_features(config_extra),
        },
        "verdict": verdict,
        "samples": samples,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"soak-{stamp}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    md = [
        f"# Nexus soak, {doc['meta']['started_at']}",
        "",
        f"- command: `{command}`",
        f"- pinning: {cores.describe()}",
        f"- nexus features: {'; '.join(doc['meta']['nexus_features'])}",
        f"- verdict: {json.dumps(verdict)}",
        "",
        "| t (s) | RSS (MB) | RPS | p50 (ms) | p99 (ms) | errors |",
        "|---|---|---|---|---|---|",
    ]
    md += [
        f"| {s['t_s']} | {s['rss_mb']} | {s['rps']} | {s['p50_ms']} | {s['p99_ms']} | {s['errors']} |"
        for s in samples
    ]
    (out_dir / f"soak-{stamp}.md").write_text("\n".join(md) + "\n")
    shutil.copyfile(path, out_dir / "soak-latest.json")
    shutil.copyfile(out_dir / f"soak-{stamp}.md", out_dir / "soak-latest.md")
    print(f"soak verdict: {json.dumps(verdict)}\nwritten: {path}")
    return path
