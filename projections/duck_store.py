"""The DuckDB store: one file, one writer process (DuckDB's own file lock).

DuckDB calls block, so they run on a dedicated thread; a batch (one list per
column) becomes an Arrow table that DuckDB reads in place, upserted with a
single statement.  Binding the lists as ``LIST`` parameters and unnesting
them costs about twice as much per row (every value converted one by one),
and a per-row ``executemany`` is two orders of magnitude slower.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from projections import schema
from projections.duckfile import open_duckdb
from projections.store import Item, StoreBusy, StoreError, fold_columns
from projections.traffic import COLUMN_NAMES, COLUMNS, PROJECTION, TABLE, Kind

log = logging.getLogger("nexus.projections.duckdb")

# Identifiers come from projections.traffic, never from input.
_SELECT_ALL = f"SELECT {', '.join(COLUMN_NAMES)} FROM {TABLE} ORDER BY request_id"  # noqa: S608
_UPSERT = schema.upsert_sql("duckdb")
_T = TypeVar("_T")
# Timestamps stay epoch milliseconds here; the upsert converts them.
_ARROW_TYPES = {
    Kind.TEXT: pa.string(),
    Kind.INT: pa.int64(),
    Kind.FLOAT: pa.float64(),
    Kind.BOOL: pa.bool_(),
    Kind.TS: pa.int64(),
}
_ARROW_SCHEMA = pa.schema([(c.name, _ARROW_TYPES[c.kind]) for c in COLUMNS])


def upsert_columns(conn: duckdb.DuckDBPyConnection, columns: list[list[object]]) -> None:
    """Upsert folded rows, one list per column in ``COLUMNS`` order."""
    batch = pa.Table.from_arrays(
        [pa.array(values, type=field.type) for values, field in zip(columns, _ARROW_SCHEMA, strict=True)],
        schema=_ARROW_SCHEMA,
    )
    conn.register(schema.BATCH_RELATION, batch)
    try:
        # fetched, so the statement is complete before the unregister
        conn.execute(_UPSERT).fetchall()
    finally:
        conn.unregister(schema.BATCH_RELATION)


def _migrate(conn: duckdb.DuckDBPyConnection) -> list[str]:
    conn.execute("BEGIN TRANSACTION")
    try:
        conn.execute(schema.SCHEMA_MIGRATIONS_DDL)
        records = conn.execute(
            "SELECT version, checksum FROM schema_migrations WHERE component = ?", [schema.COMPONENT]
        ).fetchall()
        todo = schema.check_applied("duckdb", {int(v): str(c) for v, c in records})
        for mig in todo:
            conn.execute(mig.sql)
            conn.execute(
                "INSERT INTO schema_migrations (component, version, name, checksum) VALUES (?, ?, ?, ?)",
                [schema.COMPONENT, mig.version, mig.name, mig.checksum],
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return [f"{m.version:04d}_{m.name}" for m in todo]


# What DuckDB (or Arrow, building the batch) raises for a value it cannot
# hold, as opposed to a file, lock or schema problem.
_REFUSED = (
    duckdb.ConversionException,
    duckdb.OutOfRangeException,
    pa.ArrowInvalid,
    pa.ArrowTypeError,
    UnicodeError,
    OverflowError,
)


class DuckDBStore:
    name = "duckdb"

    def refuses(self, exc: BaseException) -> bool:
        return isinstance(exc, _REFUSED)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._pool: ThreadPoolExecutor | None = None

    async def _run(self, fn: Callable[[], _T]) -> _T:
        if self._pool is None:
            raise StoreError("duckdb store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    @property
    def conn(self) -> duckdb.DuckDBPyConnection:
        if self._conn is None:
            raise StoreError("duckdb store is not open")
        return self._conn

    async def open(self) -> None:
        if self._conn is not None:
            return
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="duckdb-store")

        def _open() -> duckdb.DuckDBPyConnection:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                conn = open_duckdb(self.path)
            except duckdb.IOException as exc:
                if "lock" in str(exc).lower():
                    raise StoreBusy(
                        f"{self.path} is open in another process (a running projector or notebook)"
                    ) from None
                raise StoreError(f"cannot open {self.path}: {exc}") from None
            try:
                applied = _migrate(conn)
            except BaseException:
                conn.close()
                raise
            if applied:
                log.info("duckdb: applied migrations %s", ", ".join(applied))
            return conn

        try:
            self._conn = await self._run(_open)
        except BaseException:
            self._pool.shutdown(wait=False)
            self._pool = None
            raise

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(pool, conn.close)
        pool.shutdown(wait=False)

    async def position(self, stream: str) -> int:
        return await self._run(lambda: self._position(stream))

    def _position(self, stream: str) -> int:
        rows = self.conn.execute(
            "SELECT last_seq FROM projection_checkpoint WHERE projection = ? AND stream = ?",
            [PROJECTION, stream],
        ).fetchall()  # all: a result left unfinished blocks ``register`` on this connection
        return int(rows[0][0]) if rows else 0

    async def apply(self, stream: str, items: Sequence[Item], last_seq: int) -> int:
        return await self._run(lambda: self._apply(stream, items, last_seq))

    def _apply(self, stream: str, items: Sequence[Item], last_seq: int) -> int:
        conn = self.conn
        conn.execute("BEGIN TRANSACTION")
        try:
            checkpoint = self._position(stream)
            if last_seq <= checkpoint:
                conn.execute("ROLLBACK")
                return 0
            new, columns = fold_columns(items, checkpoint)
            if columns[0]:
                upsert_columns(conn, columns)
            conn.execute(
                "INSERT INTO projection_checkpoint (projection, stream, last_seq, updated_at) "
                "VALUES (?, ?, ?, current_timestamp) "
                "ON CONFLICT (projection, stream) DO UPDATE SET "
                "last_seq = EXCLUDED.last_seq, updated_at = EXCLUDED.updated_at",
                [PROJECTION, stream, last_seq],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return new

    async def reset(self) -> None:
        def _reset() -> None:
            conn = self.conn
            conn.execute("BEGIN TRANSACTION")
            try:
                for table in schema.OWNED_TABLES:
                    conn.execute(f"DROP TABLE IF EXISTS {table}")
                conn.execute(schema.SCHEMA_MIGRATIONS_DDL)
                conn.execute("DELETE FROM schema_migrations WHERE component = ?", [schema.COMPONENT])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            _migrate(conn)

        await self._run(_reset)

    async def rows(self) -> list[dict[str, Any]]:
        def _rows() -> list[dict[str, Any]]:
            cur = self.conn.execute(_SELECT_ALL)
            return [dict(zip(COLUMN_NAMES, r, strict=True)) for r in cur.fetchall()]

        return await self._run(_rows)
