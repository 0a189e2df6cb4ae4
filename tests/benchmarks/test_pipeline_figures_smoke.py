"""The event pipeline's benchmark scripts run end to end at a small size
and print their figures (the 1M-event run is the harness's, not CI's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _figures(script: str, *args: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "benchmarks" / script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert isinstance(found, dict)
    return found


@pytest.mark.slow
@pytest.mark.integration
def test_projection_and_audit_benchmarks_print_their_figures() -> None:
    proj = _figures("projection_throughput.py", "--count", "8000", "--batch-size", "1000")
    assert proj["events"] == 8000
    for key in ("postgres_events_per_s", "duckdb_events_per_s", "both_events_per_s", "replay_seconds"):
        value = proj[key]
        assert isinstance(value, int | float) and value > 0, key
    audit = _figures("audit_throughput.py", "--count", "4000")
    assert audit["records"] == 4000 and isinstance(audit["audit_records_per_s"], int)
