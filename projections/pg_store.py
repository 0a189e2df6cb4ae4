"""The Postgres store (asyncpg): one dedicated connection per writer."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import asyncpg

from projections import schema
from projections.store import Item, StoreBusy, StoreError, fold_columns
from projections.traffic import COLUMN_NAMES, PROJECTION, TABLE

log = logging.getLogger("nexus.projections.postgres")

# Advisory lock keys (arbitrary constants, "nexus" in ASCII + a suffix): one
# serialises migrations, one marks the single writer of the projections in
# this database (a running projector or a replay).
_MIGRATION_LOCK = 0x6E65787573_01
_WRITER_LOCK = 0x6E65787573_02

# Identifiers come from projections.traffic, never from input.
_SELECT_ALL = f"SELECT {', '.join(COLUMN_NAMES)} FROM {TABLE} ORDER BY request_id"  # noqa: S608
_UPSERT = schema.upsert_sql("postgres")


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations; safe to run from many processes at once."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(schema.SCHEMA_MIGRATIONS_DDL)
        records = await conn.fetch(
            "SELECT version, checksum FROM schema_migrations WHERE component = $1", schema.COMPONENT
        )
        todo = schema.check_applied("postgres", {r["version"]: r["checksum"] for r in records})
        for mig in todo:
            await conn.execute(mig.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (component, version, name, checksum) VALUES ($1, $2, $3, $4)",
                schema.COMPONENT,
                mig.version,
                mig.name,
                mig.checksum,
            )
    return [f"{m.version:04d}_{m.name}" for m in todo]


def refused(exc: BaseException) -> bool:
    """Postgres (or asyncpg's encoder) refused a value, not the connection
    or the schema: class 22 (data exception: a NUL, a number out of range,
    bad text) or 54 (program limit: a value too big for an index)."""
    return isinstance(
        exc, (asyncpg.DataError, asyncpg.ProgramLimitExceededError, UnicodeError, OverflowError)
    )


class PostgresStore:
    name = "postgres"

    def refuses(self, exc: BaseException) -> bool:
        return refused(exc)

    def __init__(self, dsn: str, *, exclusive: bool = True) -> None:
        self._dsn = dsn
        self._exclusive = exclusive
        self._conn: asyncpg.Connection | None = None

    async def open(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            return
        try:
            conn = await asyncpg.connect(self._dsn, timeout=10)
        except (OSError, asyncpg.PostgresError) as exc:
            raise StoreError(f"cannot connect to Postgres: {exc}") from None
        try:
            if self._exclusive and not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _WRITER_LOCK):
                raise StoreBusy(
                    "another projector or replay is writing the projections in this Postgres database"
                )
            applied = await migrate(conn)
            if applied:
                log.info("postgres: applied migrations %s", ", ".join(applied))
            await conn.execute(schema.pg_batch_table_ddl())
        except BaseException:
            await conn.close()
            raise
        self._conn = conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close(timeout=5)
            except Exception:  # a dead connection has nothing left to close
                conn.terminate()

    @property
    def conn(self) -> asyncpg.Connection:
        if self._conn is None:
            raise StoreError("postgres store is not open")
        return self._conn

    async def position(self, stream: str) -> int:
        value = await self.conn.fetchval(
            "SELECT last_seq FROM projection_checkpoint WHERE projection = $1 AND stream = $2",
            PROJECTION,
            stream,
        )
        return int(value or 0)

    async def apply(self, stream: str, items: Sequence[Item], last_seq: int) -> int:
        conn = self.conn
        async with conn.transaction():
            # Lock the checkpoint row: a second writer that slipped past the
            # advisory lock (exclusive=False) still cannot apply a batch twice.
            await conn.execute(
                "INSERT INTO projection_checkpoint (projection, stream, last_seq) VALUES ($1, $2, 0) "
                "ON CONFLICT DO NOTHING",
                PROJECTION,
                stream,
            )
            checkpoint = await conn.fetchval(
                "SELECT last_seq FROM projection_checkpoint WHERE projection = $1 AND stream = $2 FOR UPDATE",
                PROJECTION,
                stream,
            )
            if last_seq <= checkpoint:
                return 0
            new, columns = fold_columns(items, checkpoint)
            if columns[0]:
                # COPY into the session's staging table, then one upsert
                # from it (binary COPY encodes a row several times cheaper
                # than binding one array parameter per column).
                await conn.copy_records_to_table(
                    schema.BATCH_RELATION, records=list(zip(*columns, strict=True))
                )
                await conn.execute(_UPSERT)
            await conn.execute(
                "UPDATE projection_checkpoint SET last_seq = $3, updated_at = now() "
                "WHERE projection = $1 AND stream = $2",
                PROJECTION,
                stream,
                last_seq,
            )
        return new

    async def reset(self) -> None:
        conn = self.conn
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(schema.SCHEMA_MIGRATIONS_DDL)
            try:
                async with conn.transaction():  # a savepoint
                    for table in schema.OWNED_TABLES:
                        await conn.execute(f"DROP TABLE IF EXISTS {table}")
                    await conn.execute("DELETE FROM schema_migrations WHERE component = $1", schema.COMPONENT)
            except asyncpg.DependentObjectsStillExistError:
                # Another component's view depends on the table: keep the
                # table (and the view), empty it instead of dropping it.
                await conn.execute(f"TRUNCATE {', '.join(schema.OWNED_TABLES)}")
        await migrate(conn)

    async def rows(self) -> list[dict[str, Any]]:
        records = await self.conn.fetch(_SELECT_ALL)
        return [dict(r) for r in records]
