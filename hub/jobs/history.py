"""The run history: Postgres ``hub_job_run``, one row per run, the fold of
the ``admin.job_run`` events on the ADMIN stream.

Every Hub replica follows those events from its checkpoint (written in the
same transaction as the rows) and upserts; a row only moves forward (an
event older than the one it holds changes nothing), so two replicas
projecting the same events write the same rows.  ``rebuild`` (``nexus
replay hub``) drops the rows and writes the fold of what the stream holds
(the ADMIN stream keeps ``Topology.admin_max_age_s``: the history reaches
that far back; the audit chain in Postgres keeps the records for good).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import nats.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError, NotFoundError

from streams.events_admin import JobRun
from streams.tasks import stop_tasks
from streams.topology import Topology

log = logging.getLogger("nexus.hub.jobs")

PROJECTION = "hub-jobs"

SCHEMA = """
CREATE TABLE IF NOT EXISTS hub_job_run (
    run_id        text PRIMARY KEY,
    job           text NOT NULL,
    run_number    bigint NOT NULL,
    status        text NOT NULL,
    trigger       text NOT NULL,
    requested_by  text NOT NULL,
    fence         bigint NOT NULL,
    node          text NOT NULL,
    started_at    timestamptz,
    finished_at   timestamptz,
    stats         jsonb NOT NULL,
    detail        text NOT NULL,
    error         text NOT NULL,
    seq           bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS hub_job_run_job ON hub_job_run (job, run_number DESC);
CREATE TABLE IF NOT EXISTS hub_checkpoint (
    projection text NOT NULL,
    stream     text NOT NULL,
    seq        bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, stream)
);
"""

_UPSERT = """
INSERT INTO hub_job_run (run_id, job, run_number, status, trigger, requested_by, fence, node,
                         started_at, finished_at, stats, detail, error, seq)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12, $13, $14)
ON CONFLICT (run_id) DO UPDATE SET
    job = EXCLUDED.job, run_number = EXCLUDED.run_number, status = EXCLUDED.status,
    trigger = CASE WHEN EXCLUDED.trigger = '' THEN hub_job_run.trigger ELSE EXCLUDED.trigger END,
    requested_by = CASE WHEN EXCLUDED.requested_by = '' THEN hub_job_run.requested_by
                        ELSE EXCLUDED.requested_by END,
    fence = EXCLUDED.fence,
    node = CASE WHEN EXCLUDED.status = 'abandoned' THEN hub_job_run.node ELSE EXCLUDED.node END,
    started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at, stats = EXCLUDED.stats,
    detail = EXCLUDED.detail, error = EXCLUDED.error, seq = EXCLUDED.seq
WHERE hub_job_run.seq < EXCLUDED.seq
"""
# The read model's own lock: both create hub_checkpoint, and two CREATE TABLE IF
# NOT EXISTS racing each other fail on the catalogue's unique index.
_LOCK = "nexus.hub.readmodel"
_decoder = msgspec.json.Decoder(JobRun)
_encoder = msgspec.json.Encoder()


def _t(ms: int) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC) if ms else None


def row(ev: JobRun, seq: int) -> tuple[Any, ...]:
    return (
        ev.run_id,
        ev.job,
        ev.run_number,
        ev.status,
        ev.trigger,
        ev.requested_by,
        ev.fence,
        ev.node.id,
        _t(ev.started_at_ms),
        _t(ev.finished_at_ms),
        _encoder.encode(ev.stats).decode(),
        ev.detail,
        ev.error,
        seq,
    )


async def ensure_schema(conn: asyncpg.Connection[Any]) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _LOCK)
        await conn.execute(SCHEMA)


async def checkpoint(conn: asyncpg.Connection[Any], stream: str) -> int:
    seq = await conn.fetchval(
        "SELECT seq FROM hub_checkpoint WHERE projection = $1 AND stream = $2", PROJECTION, stream
    )
    return int(seq or 0)


async def apply(conn: asyncpg.Connection[Any], stream: str, batch: list[tuple[int, bytes]]) -> int:
    """Upsert the runs of a batch of (sequence, event) and move the
    checkpoint, in one transaction; returns the rows written."""
    rows = []
    for seq, data in batch:
        try:
            rows.append(row(_decoder.decode(data), seq))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("jobs: job run record at ADMIN sequence %d unreadable (%s); skipped", seq, exc)
    last = batch[-1][0] if batch else 0
    async with conn.transaction():
        if rows:
            await conn.executemany(_UPSERT, rows)
        await conn.execute(
            """INSERT INTO hub_checkpoint (projection, stream, seq) VALUES ($1, $2, $3)
               ON CONFLICT (projection, stream) DO UPDATE
               SET seq = GREATEST(hub_checkpoint.seq, EXCLUDED.seq), updated_at = now()""",
            PROJECTION,
            stream,
            last,
        )
    return len(rows)


async def read_runs(
    js: JetStreamContext,
    topology: Topology,
    from_seq: int,
    *,
    until: int | None = None,
    stop: asyncio.Event | None = None,
    batch: int = 500,
) -> AsyncIterator[list[tuple[int, bytes]]]:
    """Batches of (sequence, job run record) from ``from_seq`` on: to
    ``until``, or following the stream until ``stop`` is set."""
    nxt = max(1, from_seq)
    stopping = stop or asyncio.Event()
    subject = topology.admin_subject(str(JobRun.__struct_config__.tag))
    while (until is None or nxt <= until) and not stopping.is_set():
        psub = None
        try:
            cfg = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=nxt,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=60.0,
            )
            psub = await js.pull_subscribe(subject, durable=None, stream=topology.admin_stream, config=cfg)
            while (until is None or nxt <= until) and not stopping.is_set():
                try:
                    msgs = await psub.fetch(batch, timeout=1.0)
                except TimeoutError:
                    if until is not None:
                        return  # nothing more of ours before ``until``
                    continue
                out = []
                for m in msgs:
                    seq = m.metadata.sequence.stream
                    if seq >= nxt and (until is None or seq <= until):
                        out.append((seq, m.data))
                        nxt = seq + 1
                if out:
                    yield out
        except (nats.errors.Error, OSError, APIError) as exc:
            log.warning("jobs: reading job runs failed (%s); resuming at %d", type(exc).__name__, nxt)
            await asyncio.sleep(0.5)
        finally:
            if psub is not None:
                with contextlib.suppress(Exception):
                    await psub.unsubscribe()


async def rebuild(conn: asyncpg.Connection[Any], js: JetStreamContext, topology: Topology) -> int:
    """Drop the run history and write the fold of the ADMIN stream's job
    run records (``nexus replay hub``); returns the runs written."""
    await ensure_schema(conn)
    try:
        last = int((await js.stream_info(topology.admin_stream)).state.last_seq)
    except NotFoundError:
        last = 0
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _LOCK)
        await conn.execute("DELETE FROM hub_job_run")
        await conn.execute("DELETE FROM hub_checkpoint WHERE projection = $1", PROJECTION)
    written = 0
    if last:
        async for batch in read_runs(js, topology, 1, until=last):
            await apply(conn, topology.admin_stream, batch)
            written += len(batch)
    return int(await conn.fetchval("SELECT count(*) FROM hub_job_run")) if written else 0


class HistoryWriter:
    """The live Hub's projector of job runs (one per replica)."""

    def __init__(self, dsn: str, js: JetStreamContext, topology: Topology) -> None:
        self._dsn = dsn
        self._js = js
        self._topology = topology
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.synced_seq = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hub-job-history")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await stop_tasks(self._task, within_s=5)
            self._task = None

    async def _run(self) -> None:
        stream = self._topology.admin_stream
        while not self._stopping.is_set():
            conn: asyncpg.Connection[Any] | None = None
            try:
                conn = await asyncpg.connect(self._dsn)
                await ensure_schema(conn)
                since = await checkpoint(conn, stream)
                async for batch in read_runs(self._js, self._topology, since + 1, stop=self._stopping):
                    await apply(conn, stream, batch)
                    self.synced_seq = batch[-1][0]
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("jobs: run history not written (%s); retrying", type(exc).__name__)
                await asyncio.sleep(1.0)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()


class RunRow(msgspec.Struct, kw_only=True):
    run_id: str
    job: str
    run_number: int
    status: str
    trigger: str
    requested_by: str
    fence: int
    node: str
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    stats: dict[str, int]
    detail: str
    error: str


async def runs(
    conn: asyncpg.Connection[Any], job: str, *, limit: int = 50, before: int | None = None
) -> list[RunRow]:
    """A job's runs, newest first (``before``: a run number, for the next page)."""
    records = await conn.fetch(
        """SELECT run_id, job, run_number, status, trigger, requested_by, fence, node, started_at,
                  finished_at, stats::text AS stats, detail, error
           FROM hub_job_run WHERE job = $1 AND ($2::bigint IS NULL OR run_number < $2)
           ORDER BY run_number DESC, started_at DESC LIMIT $3""",
        job,
        before,
        limit,
    )
    return [
        RunRow(**{**dict(r), "stats": msgspec.json.decode(r["stats"], type=dict[str, int])}) for r in records
    ]
