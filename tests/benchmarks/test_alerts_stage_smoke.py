"""The alerts worker's stage benchmark runs end to end at a small size and
prints its figures (the JSON line), so it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_the_alerts_stage_benchmark_prints_its_figures() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "benchmarks" / "alerts_stage_rate.py"), "--count", "500"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures["events"] == 500
    for key in (
        "lean_events_per_s",
        "lean_cpu_us_per_event",
        "worker_events_per_s",
        "worker_cpu_us_per_event",
    ):
        assert isinstance(figures[key], int) and figures[key] >= 0, key
    assert figures["worker_events_per_s"] > 0
