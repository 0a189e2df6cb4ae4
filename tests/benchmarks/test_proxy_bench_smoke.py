"""The proxy benchmark runs end to end at a small size and prints every
figure (the full run is the lead's, on a quiet machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_proxy_benchmark_prints_its_figures() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "benchmarks" / "proxy_bench.py"), "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in (
        "keepalive_bumped_rps",
        "keepalive_direct_rps",
        "keepalive_llm_rps",
        "keepalive_llm_direct_rps",
        "new_bumped_connection_p50_ms",
        "spliced_mb_s",
        "direct_mb_s",
        "rss_1000_idle_tunnels_mb",
    ):
        assert isinstance(figures[key], int | float) and figures[key] > 0, key
    # The bumped connections really were bumped through the proxy (slower
    # than direct is expected; a proxy faster than direct would mean the
    # benchmark bypassed it).
    assert figures["new_bumped_connection_p50_ms"] > figures["new_direct_connection_p50_ms"]
    assert figures["rss_1000_idle_tunnels_mb"] >= figures["rss_mb_before_tunnels"]
