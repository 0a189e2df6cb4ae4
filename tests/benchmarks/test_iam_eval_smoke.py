"""The IAM evaluation benchmark runs and measures the scenario it claims
(10 policies, a decision by the developer's own-key statement)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_iam_benchmark_runs() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "benchmarks" / "iam_eval.py"), "--no-callgrind"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("10 policies, 19 statements; decision: allowed by NexusDeveloper")
    for name in ("evaluate:", "is_allowed:", "decode the body:", "allowed_actions:"):
        assert any(line.startswith(name) and " us" in line for line in lines), proc.stdout
