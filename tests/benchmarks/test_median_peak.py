"""A peak row stands for the median of its wrk runs, with their range."""

from __future__ import annotations

from typing import Any

from tests.benchmarks.harness.runner import _median_peak


def test_the_median_run_stands_for_the_row() -> None:
    runs = iter(
        [
            {"rps": 1500.0, "p50_ms": 40.0, "errors": 0},
            {"rps": 1400.0, "p50_ms": 45.0, "errors": 2},
            {"rps": 1700.0, "p50_ms": 35.0, "errors": 1},
        ]
    )

    def run() -> dict[str, Any]:
        return next(runs)

    row = _median_peak(3, run)
    assert row["rps"] == 1500.0 and row["p50_ms"] == 40.0
    assert row["errors"] == 3  # every run's errors count
    assert row["note"] == "median of 3 runs (1,400-1,700 rps)"


def test_one_run_is_reported_as_it_is() -> None:
    only = {"rps": 900.0, "errors": 0}
    assert _median_peak(1, lambda: only) is only
