"""Parquet export by day partition, for warehouses that outgrow one DuckDB
file (and for history beyond the stream's retention).

Layout under ``out``: one folder per table, hive-style day partitions::

    requests/day=2026-11-21/part-0.parquet
    rollup_minute/day=2026-11-21/part-0.parquet
    rollup_hour/...  rollup_day/...
    _nexus_export.json            schema version, tables, days, time

A day is written to a scratch folder first and then swapped in, so a reader
never sees half a day, and re-exporting a day replaces it instead of adding
duplicate files.  Days outside the requested range, and days already
exported that the DuckDB file no longer holds (history beyond retention),
are left alone.
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb

from projections.analytics.schema import GRAINS, SCHEMA_VERSION

# table in the export -> a query with a ``day`` column
TABLES: dict[str, str] = {
    "requests": "SELECT * FROM analytics.requests",
    **{f"rollup_{g}": f"SELECT *, CAST(bucket AS DATE) AS day FROM analytics.rollup_{g}" for g in GRAINS},  # noqa: S608
}
MANIFEST = "_nexus_export.json"


class ExportError(RuntimeError):
    """An export problem with a message fit for an operator."""


@dataclass
class ExportResult:
    out: Path
    rows: dict[str, int] = field(default_factory=dict)
    days: list[date] = field(default_factory=list)


def export(
    conn: duckdb.DuckDBPyConnection,
    out: Path,
    *,
    day_from: date | None = None,
    day_to: date | None = None,
) -> ExportResult:
    if day_from is not None and day_to is not None and day_from > day_to:
        raise ExportError(f"--from {day_from} is after --to {day_to}")
    out = out.expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create {out}: {exc.strerror}") from None
    scratch = out / f".export-{uuid.uuid4().hex[:12]}"
    scratch.mkdir()
    result = ExportResult(out=out)
    days: set[date] = set()
    lo = day_from or date.min
    hi = day_to or date.max
    try:
        for name, query in TABLES.items():
            source = f"SELECT * FROM ({query}) WHERE day BETWEEN $lo AND $hi"  # noqa: S608
            count = conn.execute(f"SELECT count(*) FROM ({source})", {"lo": lo, "hi": hi}).fetchone()  # noqa: S608
            result.rows[name] = int(count[0]) if count else 0
            if not result.rows[name]:
                continue
            target = scratch / name
            quoted = str(target).replace("'", "''")
            conn.execute(
                f"COPY ({source}) TO '{quoted}' "
                "(FORMAT parquet, PARTITION_BY (day), FILENAME_PATTERN 'part-{i}', COMPRESSION zstd)",
                {"lo": lo, "hi": hi},
            )
            for part in sorted(target.iterdir()):
                days.add(date.fromisoformat(part.name.removeprefix("day=")))
                final = out / name / part.name
                final.parent.mkdir(parents=True, exist_ok=True)
                if final.exists():
                    shutil.rmtree(final)
                part.rename(final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result.days = sorted(days)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "tables": sorted(TABLES),
        "days": [d.isoformat() for d in result.days],
        "rows": result.rows,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return result
