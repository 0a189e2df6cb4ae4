"""The analyst notebooks execute headless (nbclient, a real python3 kernel)
against DuckDB files filled through the real pipeline, and draw their charts
as PNG files that hold actual pictures."""

from __future__ import annotations

import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

import matplotlib.image
import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from nexus.cli import main as nexus

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
sys.path.insert(0, str(NOTEBOOKS))
import _build  # noqa: E402

pytestmark = pytest.mark.integration

CHARTS = {
    "cost_and_usage": ["cost_by_org_per_day.png", "tokens_by_model.png", "requests_per_hour.png"],
    "latency_and_reliability": [
        "latency_percentiles_by_model.png",
        "latency_p95_per_hour.png",
        "error_rate_by_provider.png",
        "ttft_distribution.png",
    ],
    "compliance_findings": [
        "compliance_outcomes_per_day.png",
        "findings_by_key.png",
        "access_denials_per_day.png",
    ],
}
BUDGET_S = 20.0


def run(
    name: str, out: Path, monkeypatch: pytest.MonkeyPatch, **env: str
) -> tuple[nbformat.NotebookNode, float]:
    monkeypatch.setenv("NEXUS_NOTEBOOK_OUT", str(out))
    monkeypatch.delenv("NEXUS_ANALYTICS_DB", raising=False)
    monkeypatch.delenv("NEXUS_ANALYTICS_PARQUET", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    started = time.perf_counter()
    NotebookClient(
        nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    wall = time.perf_counter() - started
    print(f"{name}: {wall:.1f} s wall (kernel start included), {cells_seconds(nb):.1f} s in cells")
    return nb, wall


def cells_seconds(nb: nbformat.NotebookNode) -> float:
    """Time the kernel spent running the cells (nbclient's timing records):
    what the notebook costs, without the kernel's start-up, which on a shared
    machine varies more than everything else."""
    total = 0.0
    for cell in nb.cells:
        timing = cell.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" in timing and "shell.execute_reply" in timing:
            start = datetime.fromisoformat(timing["iopub.execute_input"].replace("Z", "+00:00"))
            end = datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00"))
            total += (end - start).total_seconds()
    return total


def text_output(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def assert_is_a_chart(path: Path) -> None:
    assert path.is_file(), f"{path.name} was not written"
    assert path.stat().st_size > 10_000, f"{path.name} is suspiciously small"
    pixels = matplotlib.image.imread(path)
    height, width = pixels.shape[:2]
    assert width >= 600 and height >= 300
    # A real chart: many distinct colours, and ink well beyond the axes.
    rgb = (pixels[::2, ::2, :3] * 255).astype(np.uint8).reshape(-1, 3)
    assert len(np.unique(rgb, axis=0)) > 50, f"{path.name} looks blank"
    assert (rgb.min(axis=1) < 200).mean() > 0.03, f"{path.name} has almost nothing drawn"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CHARTS))
def test_notebook_runs_and_draws_its_charts(
    name: str, analytics_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nb, _ = run(name, tmp_path, monkeypatch, NEXUS_ANALYTICS_DB=str(analytics_db))
    spent = cells_seconds(nb)
    assert 0 < spent < BUDGET_S, f"{name} spent {spent:.1f} s in its cells"
    for chart in CHARTS[name]:
        assert_is_a_chart(tmp_path / chart)
    assert "Traceback" not in text_output(nb)


@pytest.mark.slow
def test_compliance_notebook_without_verdicts_still_charts_access_denials(
    analytics_db_without_verdicts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nb, _ = run(
        "compliance_findings", tmp_path, monkeypatch, NEXUS_ANALYTICS_DB=str(analytics_db_without_verdicts)
    )
    assert "No compliance verdicts in this data yet" in text_output(nb)
    assert_is_a_chart(tmp_path / "access_denials_per_day.png")
    assert not (tmp_path / "compliance_outcomes_per_day.png").exists()


@pytest.mark.slow
def test_cost_notebook_reads_a_parquet_export(
    analytics_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "copy.duckdb"
    shutil.copy(analytics_db, db)
    assert nexus(["analytics", "--db", str(db), "export", "--out", str(tmp_path / "parquet")]) == 0
    from_db, _ = run("cost_and_usage", tmp_path / "db", monkeypatch, NEXUS_ANALYTICS_DB=str(db))
    from_parquet, _ = run(
        "cost_and_usage", tmp_path / "pq", monkeypatch, NEXUS_ANALYTICS_PARQUET=str(tmp_path / "parquet")
    )
    for chart in CHARTS["cost_and_usage"]:
        assert_is_a_chart(tmp_path / "pq" / chart)
    # The same numbers either way (the totals table is the first output).
    totals = [
        next(o["data"]["text/plain"] for c in nb.cells for o in c.get("outputs", []) if "data" in o)
        for nb in (from_db, from_parquet)
    ]
    assert totals[0] == totals[1]


@pytest.mark.parametrize("source", _build.sources(), ids=lambda p: p.stem)
def test_ipynb_is_built_from_its_source(source: Path) -> None:
    stored = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    built = _build.notebook(source.read_text(encoding="utf-8"))
    assert [(c.cell_type, c.source) for c in stored.cells] == [
        (c.cell_type, c.source) for c in built.cells
    ], f"run `python notebooks/_build.py` after editing {source.name}"
