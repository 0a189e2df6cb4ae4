"""The Hub's Postgres read model: one row per item (its public view, the
admin API's very answer), for operators' SQL, reports and the console.

It is a projection of the CONFIG stream like the in-memory state: rows and
the checkpoint (projection, stream, sequence) are written in one
transaction.  ``sync`` brings the tables from their checkpoint to a state
by writing every item whose version is newer and deleting every item
deleted since; the live Hub calls it as its state moves, ``nexus replay
hub`` calls it once on empty tables with the fold of the whole stream, so
the two write the same rows by construction (and a test compares them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg
import msgspec

from hub.state import HubState
from hub.views import key_status, owning_org, view
from streams.tasks import stop_tasks

log = logging.getLogger("nexus.hub")

PROJECTION = "hub"

SCHEMA = """
CREATE TABLE IF NOT EXISTS hub_resource (
    aggregate  text NOT NULL,
    id         text NOT NULL,
    org_id     text NOT NULL DEFAULT '',
    version    bigint NOT NULL,
    status     text NOT NULL DEFAULT '',
    item       jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (aggregate, id)
);
CREATE INDEX IF NOT EXISTS hub_resource_org ON hub_resource (aggregate, org_id, id);
CREATE TABLE IF NOT EXISTS hub_checkpoint (
    projection text NOT NULL,
    stream     text NOT NULL,
    seq        bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, stream)
);
"""

_encoder = msgspec.json.Encoder()

_UPSERT = """
INSERT INTO hub_resource
    (aggregate, id, org_id, version, status, item, created_at, updated_at, created_by, updated_by)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10)
ON CONFLICT (aggregate, id) DO UPDATE SET
    org_id = EXCLUDED.org_id, version = EXCLUDED.version, status = EXCLUDED.status, item = EXCLUDED.item,
    created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,
    created_by = EXCLUDED.created_by, updated_by = EXCLUDED.updated_by
WHERE hub_resource.version < EXCLUDED.version
"""
_LOCK = "nexus.hub.readmodel"


async def ensure_schema(conn: asyncpg.Connection[Any]) -> None:
    async with conn.transaction():
        # Two Hubs starting at once must not race CREATE TABLE IF NOT EXISTS.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _LOCK)
        await conn.execute(SCHEMA)


async def checkpoint(conn: asyncpg.Connection[Any], stream: str) -> int:
    seq = await conn.fetchval(
        "SELECT seq FROM hub_checkpoint WHERE projection = $1 AND stream = $2", PROJECTION, stream
    )
    return int(seq or 0)


def _rows(state: HubState, since: int) -> tuple[list[tuple[Any, ...]], list[tuple[str, str]]]:
    upserts = []
    for table in state.items.values():
        for res in table.values():
            if res.version <= since:
                continue
            item = view(res)
            upserts.append(
                (
                    res.aggregate,
                    res.id,
                    owning_org(res),
                    res.version,
                    key_status(res, None)
                    if res.key is not None
                    else res.thing.status
                    if res.thing is not None
                    else "",
                    _encoder.encode(item).decode(),
                    item.created_at,
                    item.updated_at,
                    res.created_by,
                    res.updated_by,
                )
            )
    deletes = [(agg, rid) for (agg, rid), seq in state.tombstones.items() if seq > since]
    return upserts, deletes


async def sync(conn: asyncpg.Connection[Any], state: HubState, stream: str) -> int:
    """Write what changed between the checkpoint and ``state``; returns the
    number of rows written or deleted."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO hub_checkpoint (projection, stream, seq) VALUES ($1, $2, 0) ON CONFLICT DO NOTHING",
            PROJECTION,
            stream,
        )
        since = int(
            await conn.fetchval(
                "SELECT seq FROM hub_checkpoint WHERE projection = $1 AND stream = $2 FOR UPDATE",
                PROJECTION,
                stream,
            )
        )
        if state.seq <= since:
            return 0
        upserts, deletes = _rows(state, since)
        if upserts:
            await conn.executemany(_UPSERT, upserts)
        if deletes:
            await conn.executemany("DELETE FROM hub_resource WHERE aggregate = $1 AND id = $2", deletes)
        await conn.execute(
            "UPDATE hub_checkpoint SET seq = $3, updated_at = now() WHERE projection = $1 AND stream = $2",
            PROJECTION,
            stream,
            state.seq,
        )
    return len(upserts) + len(deletes)


async def rebuild(conn: asyncpg.Connection[Any], state: HubState, stream: str) -> int:
    """Drop the read model's rows and write ``state`` (``nexus replay hub``)."""
    await ensure_schema(conn)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _LOCK)
        await conn.execute("DELETE FROM hub_resource")
        await conn.execute("DELETE FROM hub_checkpoint WHERE projection = $1", PROJECTION)
        return await sync(conn, state, stream)


class ReadModelWriter:
    """The live Hub's writer: follows the state (a ControlPlane listener),
    syncing at most every ``interval_s``; holds on while Postgres is away
    (the checkpoint makes the next sync write everything missed)."""

    def __init__(self, dsn: str, stream: str, *, interval_s: float = 0.05) -> None:
        self._dsn = dsn
        self._stream = stream
        self._interval = interval_s
        self._state: HubState | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.synced_seq = 0
        self._progress = asyncio.Condition()
        self._stopping = False

    def changed(self, state: HubState) -> None:
        self._state = state
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hub-readmodel")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            # Bounded: a cancel that lands inside asyncpg's connect can be
            # turned into an error the loop would retry; the flag ends it.
            with contextlib.suppress(Exception):
                await stop_tasks(self._task, within_s=5)
            self._task = None

    async def wait_synced(self, seq: int, *, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout), self._progress:
            await self._progress.wait_for(lambda: self.synced_seq >= seq)

    async def _run(self) -> None:
        conn: asyncpg.Connection[Any] | None = None
        try:
            while not self._stopping:
                await self._wake.wait()
                self._wake.clear()
                state = self._state
                if state is None:
                    continue
                try:
                    if conn is None or conn.is_closed():
                        conn = await asyncpg.connect(self._dsn)
                        await ensure_schema(conn)
                    await sync(conn, state, self._stream)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("hub: read model not written (%s); retrying", type(exc).__name__)
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            await conn.close()
                    conn = None
                    self._wake.set()
                    await asyncio.sleep(1.0)
                    continue
                async with self._progress:
                    self.synced_seq = state.seq
                    self._progress.notify_all()
                await asyncio.sleep(self._interval)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
