"""One gateway and one simulated provider for the whole module, and the
capability x provider matrix printed at the end of the run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conformance.stack import Stack, start_stack

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
RESULTS: dict[tuple[str, str], str] = {}


@pytest.fixture(scope="module")
async def stack() -> AsyncIterator[Stack]:
    s = await start_stack()
    yield s
    await s.close()


def pytest_runtest_logreport(report: Any) -> None:
    cell = getattr(report, "conformance_cell", None)
    if cell is None and report.when == "call":
        for name, value in report.user_properties:
            if name == "cell":
                cell = value
    if cell is not None and report.when == "call":
        RESULTS[cell] = "ok" if report.passed else "FAIL"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    providers = sorted({p for p, _ in RESULTS})
    tr = terminalreporter
    tr.section(
        "gateway conformance: capability x provider over HTTP (ok = claimed and passed, - = not claimed)"
    )
    tr.write_line(f"{'provider':<12} " + " ".join(f"{c:>12}" for c in COLUMNS))
    for p in providers:
        tr.write_line(f"{p:<12} " + " ".join(f"{RESULTS.get((p, c), '-'):>12}" for c in COLUMNS))
