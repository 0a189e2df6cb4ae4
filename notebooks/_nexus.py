"""What every analyst notebook here starts with: a connection to the
analytics schema (docs/analytics-schema.md) and chart helpers.

The data comes from the DuckDB file in ``NEXUS_ANALYTICS_DB`` (default
``~/.nexus/analytics.duckdb``) or, when ``NEXUS_ANALYTICS_PARQUET`` is set,
from a Parquet export (``nexus analytics export --out DIR``) under the same
table names; charts go to ``NEXUS_NOTEBOOK_OUT`` (default ``charts/``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import duckdb
import matplotlib
import polars as pl

from projections.duckfile import open_duckdb

matplotlib.use("Agg")  # headless: every chart is written as a PNG file
import matplotlib.pyplot as plt

SCHEMA_VERSION = "1"
TABLES = ("requests", "rollup_minute", "rollup_hour", "rollup_day")
OUT = Path(os.environ.get("NEXUS_NOTEBOOK_OUT", "charts")).expanduser()


def connect() -> duckdb.DuckDBPyConnection:
    parquet = os.environ.get("NEXUS_ANALYTICS_PARQUET")
    if parquet:
        root = Path(parquet).expanduser()
        manifest = json.loads((root / "_nexus_export.json").read_text())
        con = duckdb.connect()
        con.execute("CREATE SCHEMA analytics")
        for table in manifest["tables"]:
            if table not in TABLES:  # the names become SQL identifiers
                continue
            glob = str(root / table / "*" / "*.parquet").replace("'", "''")
            con.execute(
                f"CREATE VIEW analytics.{table} AS SELECT * FROM "  # noqa: S608 - table from TABLES
                f"read_parquet('{glob}', hive_partitioning = true, union_by_name = true)"
            )
        version = str(manifest["schema_version"])
    else:
        db = Path(os.environ.get("NEXUS_ANALYTICS_DB", "~/.nexus/analytics.duckdb")).expanduser()
        if not db.is_file():
            raise RuntimeError(f"no analytics database at {db}: set NEXUS_ANALYTICS_DB")
        try:
            con = open_duckdb(db, read_only=True)
        except duckdb.IOException as exc:
            raise RuntimeError(
                f"cannot open {db} ({exc}); if a projector is running, export Parquet with "
                "`nexus analytics export --out DIR` and set NEXUS_ANALYTICS_PARQUET=DIR"
            ) from None
        rows = con.execute("SELECT value FROM analytics.meta WHERE key = 'schema_version'").fetchall()
        version = rows[0][0] if rows else "?"
    if version != SCHEMA_VERSION:
        raise RuntimeError(f"these notebooks read analytics schema v{SCHEMA_VERSION}, the data is v{version}")
    return con


_con: duckdb.DuckDBPyConnection | None = None


def q(sql: str, *params: object) -> pl.DataFrame:
    """Run a query on the analytics schema; the result as a polars frame."""
    global _con
    if _con is None:
        _con = connect()
    return _con.sql(sql, params=list(params) or None).pl()


def save(fig: plt.Figure, name: str) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / name
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")
    return path


def empty(ax: plt.Axes, text: str) -> None:
    """Say why a chart has nothing to show, on the chart."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])
