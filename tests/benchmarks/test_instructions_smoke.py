"""The instruction-count benchmark runs end to end at a small size, and
what it counts means something: the production features cost more
instructions per request than the bare gateway."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.integration
def test_production_features_count_more_instructions_than_bare() -> None:
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind is not installed")
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "tests" / "benchmarks" / "instructions.py"),
            "--requests",
            "30",
            "--features",
            "bare,production",
            "--modes",
            "non-stream",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    bare = figures["bare_non_stream_minstr_per_request"]
    production = figures["production_non_stream_minstr_per_request"]
    assert 0.2 < bare < production < 20, figures
