"""The audit tables in Postgres and the one transaction that appends to them.

``audit_log.content`` is a ``json`` column (not ``jsonb``): Postgres keeps
the exact text, so the bytes hashed at append time are the bytes verified
later.  ``audit_chain`` holds the chain head (position and hash): it makes
deleting the newest records detectable and serialises writers.
``audit_checkpoint`` holds the consumer position per stream; it is written in
the same transaction as the records it covers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import asyncpg

from processors.audit.chain import GENESIS, BodyCopy, Record, build_record

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_log (
    n           bigint PRIMARY KEY,
    event_id    text NOT NULL,
    event_type  text NOT NULL,
    stream      text NOT NULL,
    stream_seq  bigint NOT NULL,
    occurred_at timestamptz,
    org_id      text NOT NULL DEFAULT '',
    project_id  text NOT NULL DEFAULT '',
    key_id      text NOT NULL DEFAULT '',
    request_id  text NOT NULL DEFAULT '',
    content     json NOT NULL,
    prev_hash   bytea NOT NULL,
    hash        bytea NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream, stream_seq)
);
CREATE INDEX IF NOT EXISTS audit_log_event_id ON audit_log (event_id);
CREATE INDEX IF NOT EXISTS audit_log_org_time ON audit_log (org_id, occurred_at);
CREATE TABLE IF NOT EXISTS audit_chain (
    chain text PRIMARY KEY,
    n     bigint NOT NULL,
    hash  bytea NOT NULL,
    epoch bigint NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS audit_checkpoint (
    consumer   text NOT NULL,
    stream     text NOT NULL,
    seq        bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, stream)
);
CREATE TABLE IF NOT EXISTS audit_body (
    event_id     text NOT NULL,
    path         text NOT NULL,
    content_type text NOT NULL,
    sha256       text NOT NULL,
    data         bytea NOT NULL,
    stored_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, path)
);
CREATE INDEX IF NOT EXISTS audit_body_stored_at ON audit_body (stored_at);
"""

CHAIN = "main"


class Fenced(Exception):
    """Another audit writer has claimed the chain since this one did."""


async def claim_writer(pool: asyncpg.Pool[Any]) -> int:
    """Become the chain's writer: bump and return its epoch.  Every append
    carries the epoch it was claimed under; an append from an older epoch is
    refused, so a writer that lost its lock without noticing (a dropped lock
    connection) can never interleave with its successor."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO audit_chain (chain, n, hash) VALUES ($1, 0, $2) ON CONFLICT DO NOTHING",
            CHAIN,
            GENESIS,
        )
        epoch = await conn.fetchval(
            "UPDATE audit_chain SET epoch = epoch + 1 WHERE chain = $1 RETURNING epoch", CHAIN
        )
        return int(epoch)


async def ensure_schema(conn: asyncpg.Connection[Any] | asyncpg.Pool[Any]) -> None:
    # Concurrent first starts would race on CREATE TABLE IF NOT EXISTS; an
    # advisory lock makes the migration single-file.
    async with _acquire(conn) as c, c.transaction():
        await c.execute("SELECT pg_advisory_xact_lock(hashtext('nexus.audit.schema'))")
        await c.execute(SCHEMA)


class _acquire:
    def __init__(self, src: asyncpg.Connection[Any] | asyncpg.Pool[Any]) -> None:
        self._src = src
        self._ctx: Any = None

    async def __aenter__(self) -> asyncpg.Connection[Any]:
        if isinstance(self._src, asyncpg.Pool):
            self._ctx = self._src.acquire()
            return await self._ctx.__aenter__()
        return self._src

    async def __aexit__(self, *exc: object) -> None:
        if self._ctx is not None:
            await self._ctx.__aexit__(*exc)


async def checkpoint(conn: asyncpg.Connection[Any], consumer: str, stream: str) -> int:
    seq = await conn.fetchval(
        "SELECT seq FROM audit_checkpoint WHERE consumer = $1 AND stream = $2", consumer, stream
    )
    return int(seq or 0)


async def append(
    pool: asyncpg.Pool[Any],
    *,
    consumer: str,
    stream: str,
    messages: Sequence[tuple[int, bytes]],
    store_bodies: bool,
    epoch: int | None = None,
    through: int = 0,
    unstorable: str = "",
) -> int:
    """Append the records for ``messages`` ((stream_seq, payload), in stream
    order) and move the checkpoint, in one transaction.  Messages at or below
    the checkpoint were recorded before (a redelivery) and are skipped.
    ``through`` moves the checkpoint further (past messages this consumer
    passes: re-drives for others).  ``unstorable`` records the messages as
    digests with that reason (``chain.build_record``).  Returns how many
    records were appended."""
    async with pool.acquire() as conn, conn.transaction():
        # The chain head row lock serialises every writer of the chain.
        select = "SELECT n, hash, epoch FROM audit_chain WHERE chain = $1 FOR UPDATE"
        head = await conn.fetchrow(select, CHAIN)
        if head is None:
            await conn.execute(
                "INSERT INTO audit_chain (chain, n, hash) VALUES ($1, 0, $2) ON CONFLICT DO NOTHING",
                CHAIN,
                GENESIS,
            )
            head = await conn.fetchrow(select, CHAIN)
        assert head is not None
        if epoch is not None and int(head["epoch"]) != epoch:
            raise Fenced(f"the chain was claimed by writer epoch {head['epoch']} (this writer: {epoch})")
        n, prev = int(head["n"]), bytes(head["hash"])
        done = await checkpoint(conn, consumer, stream)
        rows: list[tuple[Any, ...]] = []
        bodies: list[tuple[str, BodyCopy]] = []
        last = done
        for seq, raw in messages:
            if seq <= last:
                continue
            n += 1
            rec, copies = build_record(
                n=n, prev_hash=prev, stream=stream, stream_seq=seq, raw=raw, unstorable=unstorable
            )
            rows.append(_row(rec))
            bodies.extend((rec.event_id, c) for c in copies)
            prev = rec.hash
            last = seq
        if rows:
            # COPY: a backlog is written several times faster than with
            # INSERTs, still inside this transaction.
            await conn.copy_records_to_table("audit_log", records=rows, columns=_COLUMNS)
            await conn.execute("UPDATE audit_chain SET n = $2, hash = $3 WHERE chain = $1", CHAIN, n, prev)
            if store_bodies and bodies:
                await conn.executemany(
                    "INSERT INTO audit_body (event_id, path, content_type, sha256, data)"
                    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    [(eid, c.path, c.content_type, c.sha256, c.data) for eid, c in bodies if eid],
                )
        last = max(last, through)
        if last != done:
            await conn.execute(
                "INSERT INTO audit_checkpoint (consumer, stream, seq) VALUES ($1, $2, $3)"
                " ON CONFLICT (consumer, stream) DO UPDATE SET seq = EXCLUDED.seq, updated_at = now()",
                consumer,
                stream,
                last,
            )
        return len(rows)


_COLUMNS = (
    "n",
    "event_id",
    "event_type",
    "stream",
    "stream_seq",
    "occurred_at",
    "org_id",
    "project_id",
    "key_id",
    "request_id",
    "content",
    "prev_hash",
    "hash",
)


def _row(rec: Record) -> tuple[Any, ...]:
    occurred = (
        dt.datetime.fromtimestamp(rec.occurred_at_ms / 1000, dt.UTC) if rec.occurred_at_ms > 0 else None
    )
    return (
        rec.n,
        rec.event_id,
        rec.event_type,
        rec.stream,
        rec.stream_seq,
        occurred,
        rec.org_id,
        rec.project_id,
        rec.key_id,
        rec.request_id,
        rec.content,
        rec.prev_hash,
        rec.hash,
    )


# What verify reads: occurred_at comes back as the epoch milliseconds it was
# written from, so an edited timestamp shows up as a column mismatch.
SELECT_RECORDS = (
    "SELECT n, event_id, event_type, stream, stream_seq, org_id, project_id, key_id, request_id,"
    " content::text AS content, prev_hash, hash,"
    " coalesce(round(extract(epoch FROM occurred_at) * 1000)::bigint, 0) AS occurred_ms FROM audit_log"
)


def record_from_row(row: asyncpg.Record) -> Record:
    return Record(
        n=int(row["n"]),
        event_id=row["event_id"],
        event_type=row["event_type"],
        stream=row["stream"],
        stream_seq=int(row["stream_seq"]),
        occurred_at_ms=int(row["occurred_ms"]),
        org_id=row["org_id"],
        project_id=row["project_id"],
        key_id=row["key_id"],
        request_id=row["request_id"],
        content=row["content"],
        prev_hash=bytes(row["prev_hash"]),
        hash=bytes(row["hash"]),
    )
