"""The benchmark harness end to end in its quickest mode: the simulated
upstream called directly, and Nexus when the gateway is in the checkout.
Never installs peers (--no-install, and they are not selected)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "tests" / "benchmarks" / "run.py"


@pytest.mark.slow
def test_quick_run_writes_a_table_with_measured_rows(tmp_path: Path) -> None:
    gateway_present = (REPO / "ingress" / "gateway" / "cli.py").exists()
    t0 = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            str(RUN),
            "--quick",
            "--systems",
            "direct,nexus",
            "--upstreams",
            "zero",
            "--no-install",
            "--no-figures",
            "--out",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=58,
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert elapsed < 60

    doc = json.loads((tmp_path / "latest.json").read_text())
    rows = doc["rows"]
    direct = [r for r in rows if r["system"] == "direct"]
    # closed-loop peak and open-loop fixed rate, non-stream and stream
    assert {(r["mode"], r["tool"]) for r in direct} >= {
        ("non-stream", "wrk"),
        ("stream", "wrk"),
        ("non-stream", "open-loop"),
        ("stream", "open-loop"),
    }
    for r in direct:
        assert r["rps"] and r["rps"] > 0, r
        assert r["p50_ms"] is not None and r["p99_ms"] >= r["p50_ms"] > 0, r
        assert r["peak_rss_mb"] > 0, r
    stream_fixed = [r for r in direct if r["mode"] == "stream" and r["tool"] == "open-loop"]
    assert all(r["ttft_p50_ms"] is not None and 0 < r["ttft_p50_ms"] <= r["p50_ms"] for r in stream_fixed)

    nexus = [r for r in rows if r["system"] == "nexus"]
    assert nexus, "the nexus system must be reported, measured or not"
    if gateway_present:
        measured = [r for r in nexus if r["rps"] is not None]
        assert len(measured) >= 4, nexus
        for r in measured:
            assert r["rps"] > 0, r
            # compared with the direct row of the same mode and load
            assert r["added_p50_ms"] is not None and r["rps_ratio"] is not None, r
        fixed = [r for r in measured if r["tool"] == "open-loop"]
        assert fixed and all(r["errors"] == 0 for r in fixed), fixed
    else:
        assert nexus[0]["rps"] is None and "not in this checkout" in nexus[0]["note"]

    # the same table as Markdown, and the pinning said in the output
    md = (tmp_path / "latest.md").read_text()
    assert "| system | upstream | mode | load | RPS | p50 | p99 | TTFT p50 |" in md
    assert "pinning:" in proc.stdout and doc["meta"]["pinning"]
    assert list(tmp_path.glob("bench-*.json")) and list(tmp_path.glob("bench-*.md"))
