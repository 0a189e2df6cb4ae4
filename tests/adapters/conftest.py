"""Prints the conformance suite's capability x provider matrix."""

from __future__ import annotations

from typing import Any

COLUMNS = [
    "text",
    "stream",
    "tools",
    "tools+stream",
    "vision",
    "json_schema",
    "reasoning",
    "embeddings",
    "errors",
]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from tests.adapters import test_conformance

    results = test_conformance.RESULTS
    if not results:
        return
    providers = sorted({p for p, _ in results})
    tr = terminalreporter
    tr.section("codec capability matrix (ok = claimed and passed, - = not claimed)")
    tr.write_line(f"{'provider':<12} " + " ".join(f"{c:>12}" for c in COLUMNS))
    for p in providers:
        tr.write_line(f"{p:<12} " + " ".join(f"{results.get((p, c), '-'):>12}" for c in COLUMNS))
