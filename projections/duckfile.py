"""Opening a Nexus DuckDB file.

DuckDB names a file's catalog after the file (``analytics.duckdb`` ->
catalog ``analytics``), and a catalog named like a schema makes every
``analytics.<table>`` reference ambiguous.  Attaching the file under a fixed
alias gives every reader and writer the same unambiguous catalog, whatever
the file is called.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

CATALOG = "nexus"


def open_duckdb(path: str | Path, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect(":memory:")
    target = str(path).replace("'", "''")
    try:
        conn.execute(f"ATTACH '{target}' AS {CATALOG}{' (READ_ONLY)' if read_only else ''}")
        conn.execute(f"USE {CATALOG}")
    except BaseException:
        conn.close()
        raise
    return conn
