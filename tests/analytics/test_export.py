"""``nexus analytics export``: Parquet by day, hive-style, re-runnable."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from nexus.cli import main as nexus

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _parquet(out: Path, table: str) -> tuple[int, object, int]:
    conn = duckdb.connect()
    try:
        row = conn.execute(
            f"SELECT count(*), sum(cost_usd), count(DISTINCT day) "
            f"FROM read_parquet('{out}/{table}/*/*.parquet', hive_partitioning = true)"
        ).fetchone()
        assert row is not None
        return int(row[0]), row[1], int(row[2])
    finally:
        conn.close()


def _db(db: Path, sql: str) -> tuple[object, ...]:
    conn = duckdb.connect(str(db), read_only=True)
    try:
        row = conn.execute(sql).fetchone()
        assert row is not None
        return tuple(row)
    finally:
        conn.close()


def test_export_writes_one_folder_per_day_and_rerunning_replaces_them(
    projected_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "copy.duckdb"
    shutil.copy(projected_db, db)
    out = tmp_path / "export"
    assert nexus(["analytics", "--db", str(db), "export", "--out", str(out)]) == 0
    assert "exported" in capsys.readouterr().out

    requests, cost, days = _db(
        db, "SELECT count(*), sum(cost_usd), count(DISTINCT day) FROM analytics.requests"
    )
    day_folders = sorted(p.name for p in (out / "requests").iterdir())
    assert len(day_folders) == days >= 4
    assert all(name.startswith("day=") and len(name) == len("day=2026-11-21") for name in day_folders)
    assert _parquet(out, "requests") == (requests, cost, days)
    rollup_cost = _db(db, "SELECT sum(cost_usd) FROM analytics.rollup_hour")[0]
    assert _parquet(out, "rollup_hour")[1] == rollup_cost
    manifest = json.loads((out / "_nexus_export.json").read_text())
    assert manifest["schema_version"] == 1 and len(manifest["days"]) == days

    # Again, for one day only: that day is replaced, nothing is duplicated.
    one = day_folders[1].removeprefix("day=")
    assert nexus(["analytics", "--db", str(db), "export", "--out", str(out), "--from", one, "--to", one]) == 0
    assert _parquet(out, "requests") == (requests, cost, days)
    assert not [p for p in out.iterdir() if p.name.startswith(".export-")]

    # A range selects days.
    ranged = tmp_path / "ranged"
    first, last = day_folders[1].removeprefix("day="), day_folders[2].removeprefix("day=")
    assert (
        nexus(["analytics", "--db", str(db), "export", "--out", str(ranged), "--from", first, "--to", last])
        == 0
    )
    assert sorted(p.name for p in (ranged / "requests").iterdir()) == day_folders[1:3]


def test_export_errors_are_plain_sentences(
    projected_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        nexus(
            ["analytics", "--db", str(projected_db), "export", "--out", str(tmp_path), "--from", "2026-02-30"]
        )
    assert exited.value.code == 2 and "is not a day" in capsys.readouterr().err
    args = ["analytics", "--db", str(projected_db), "export", "--out", str(tmp_path)]
    assert nexus([*args, "--from", "2026-02-02", "--to", "2026-02-01"]) == 1
    assert "is after" in capsys.readouterr().err
    assert nexus(["analytics", "--db", str(tmp_path / "nope.duckdb"), "status"]) == 1
    assert "no DuckDB file" in capsys.readouterr().err
    # The file held open by another process (here: this one) is named, not a traceback.
    held = duckdb.connect(str(projected_db))
    try:
        busy = subprocess.run(
            [sys.executable, "-m", "nexus.cli", "analytics", "--db", str(projected_db), "status"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        held.close()
    assert busy.returncode == 1 and "open in another process" in busy.stderr
    assert "Traceback" not in busy.stderr


def test_status_and_rebuild(projected_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "copy.duckdb"
    shutil.copy(projected_db, db)
    before = _db(
        db, "SELECT count(*), sum(requests), sum(cost_usd), sum(latency_sum_ms) FROM analytics.rollup_minute"
    )
    assert nexus(["analytics", "--db", str(db), "status"]) == 0
    out = capsys.readouterr().out
    assert f"requests: {before[1]} (" in out and "stale buckets: minute 0, hour 0, day 0" in out
    # Wipe the rollups behind the store's back; --rebuild recomputes them from traffic_event.
    conn = duckdb.connect(str(db))
    try:
        conn.execute("DELETE FROM analytics.rollup_minute")
    finally:
        conn.close()
    assert nexus(["analytics", "--db", str(db), "refresh", "--rebuild"]) == 0
    assert "rebuilt rollups" in capsys.readouterr().out
    after = _db(
        db, "SELECT count(*), sum(requests), sum(cost_usd), sum(latency_sum_ms) FROM analytics.rollup_minute"
    )
    assert after == before
