"""Opening a Nexus DuckDB file.

DuckDB names a file's catalog after the file (``analytics.duckdb`` ->
catalog ``analytics``), and a catalog named like a schema makes every
``analytics.<table>`` reference ambiguous.  Attaching the file under a fixed
alias gives every reader and writer the same unambiguous catalog, whatever
the file is called.

DuckDB also refuses to attach one file twice in a process, so a second open
of a file this process already has attached (a notebook helper or a test
next to a running projector) gets a cursor on the existing attachment.
"""

from __future__ import annotations

import threading
from pathlib import Path

import duckdb

CATALOG = "nexus"

_lock = threading.Lock()
_attached: dict[str, duckdb.DuckDBPyConnection] = {}


def open_duckdb(path: str | Path, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    key = str(Path(path).expanduser().resolve())
    with _lock:
        existing = _attached.get(key)
        if existing is not None:
            try:
                cursor = existing.cursor()
                cursor.execute(f"USE {CATALOG}")
                return cursor
            except duckdb.Error:
                del _attached[key]  # closed since; attach afresh
        conn = duckdb.connect(":memory:")
        target = key.replace("'", "''")
        try:
            conn.execute(f"ATTACH '{target}' AS {CATALOG}{' (READ_ONLY)' if read_only else ''}")
            conn.execute(f"USE {CATALOG}")
        except BaseException:
            conn.close()
            raise
        _attached[key] = conn
        return conn
