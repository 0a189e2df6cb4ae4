"""The delivery log: a Postgres read model of ``alert.raised`` and
``alert.delivery`` events (tables ``alert`` and ``alert_delivery``).

Every row is keyed by its event id and written with ``ON CONFLICT DO
NOTHING``, and no row depends on another: redelivery and arrival order
change nothing, so the live table and one rebuilt by ``replay`` (drop,
then read the stream from its start) hold the same rows.

    SELECT a.title, d.channel, d.outcome, d.attempts, d.reason
      FROM alert_delivery d JOIN alert a ON a.id = d.alert_id
     ORDER BY d.at DESC LIMIT 20;
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass
from typing import Any

import asyncpg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from streams import codec
from streams.events_alerts import AlertDelivery, AlertRaised
from streams.jetstream import connect
from streams.topology import Topology

SCHEMA = """
CREATE TABLE IF NOT EXISTS alert (
    id text PRIMARY KEY,
    at timestamptz NOT NULL,
    rule text NOT NULL,
    rule_kind text NOT NULL,
    subject text NOT NULL,
    dedup_key text NOT NULL,
    severity text NOT NULL,
    status text NOT NULL,
    title text NOT NULL,
    summary text NOT NULL,
    channels text[] NOT NULL,
    suppressed integer NOT NULL,
    source_event_id text NOT NULL,
    node_id text NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_at ON alert (at);
CREATE TABLE IF NOT EXISTS alert_delivery (
    id text PRIMARY KEY,
    alert_id text NOT NULL,
    at timestamptz NOT NULL,
    rule text NOT NULL,
    channel text NOT NULL,
    channel_kind text NOT NULL,
    outcome text NOT NULL,
    attempts integer NOT NULL,
    status_code integer NOT NULL,
    reason text NOT NULL,
    elapsed_ms double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_delivery_alert ON alert_delivery (alert_id);
CREATE INDEX IF NOT EXISTS alert_delivery_at ON alert_delivery (at);
"""

_INSERT_ALERT = """
INSERT INTO alert (id, at, rule, rule_kind, subject, dedup_key, severity, status, title, summary,
                   channels, suppressed, source_event_id, node_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT (id) DO NOTHING
"""
_INSERT_DELIVERY = """
INSERT INTO alert_delivery (id, alert_id, at, rule, channel, channel_kind, outcome, attempts,
                            status_code, reason, elapsed_ms)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (id) DO NOTHING
"""


def _at(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def _clean(text: str) -> str:
    # Postgres text cannot hold NUL; an event may (it is our text, but a
    # subject can come from a tenant's id).
    return text.replace("\x00", "\ufffd")


def _alert_row(e: AlertRaised) -> tuple[Any, ...]:
    return (
        e.id,
        _at(e.occurred_at_ms),
        _clean(e.rule),
        e.rule_kind,
        _clean(e.subject),
        _clean(e.dedup_key),
        e.severity,
        e.status,
        _clean(e.title),
        _clean(e.summary),
        [_clean(c) for c in e.channels],
        e.suppressed,
        _clean(e.source_event_id),
        _clean(e.node.id),
    )


def _delivery_row(e: AlertDelivery) -> tuple[Any, ...]:
    return (
        e.id,
        e.alert_id,
        _at(e.occurred_at_ms),
        _clean(e.rule),
        _clean(e.channel),
        e.channel_kind,
        e.outcome,
        e.attempts,
        e.status_code,
        _clean(e.reason),
        e.elapsed_ms,
    )


class DeliveryLog:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._pool: asyncpg.Pool[Any] | None = None

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=2)
        async with self._pool.acquire() as conn:
            await conn.execute(SCHEMA)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def write(self, event: AlertRaised | AlertDelivery) -> None:
        await self.write_many([event])

    async def write_many(self, events: list[AlertRaised | AlertDelivery]) -> None:
        assert self._pool is not None
        alerts = [_alert_row(e) for e in events if isinstance(e, AlertRaised)]
        deliveries = [_delivery_row(e) for e in events if isinstance(e, AlertDelivery)]
        async with self._pool.acquire() as conn, conn.transaction():
            if alerts:
                await conn.executemany(_INSERT_ALERT, alerts)
            if deliveries:
                await conn.executemany(_INSERT_DELIVERY, deliveries)

    async def rows(self) -> dict[str, list[dict[str, Any]]]:
        """Both tables, ordered by id (for comparing a replay with the live log)."""
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            return {
                table: [dict(r) for r in await conn.fetch(f"SELECT * FROM {table} ORDER BY id")]  # noqa: S608
                for table in ("alert", "alert_delivery")
            }

    async def reset(self) -> None:
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            await conn.execute("DROP TABLE IF EXISTS alert_delivery; DROP TABLE IF EXISTS alert;")
            await conn.execute(SCHEMA)


@dataclass(frozen=True, slots=True)
class ReplayReport:
    events: int
    last_seq: int


async def replay(dsn: str, nats_url: str, topology: Topology, *, batch: int = 500) -> ReplayReport:
    """Drop the delivery log and rebuild it from the traffic stream's
    ``alert.*`` events.  The running worker may keep writing meanwhile:
    rows are idempotent, so nothing is counted twice."""
    log = DeliveryLog(dsn)
    await log.open()
    nc = await connect(nats_url, name="nexus-alerts-replay")
    count = last = 0
    try:
        await log.reset()
        js = nc.jetstream()
        subject = f"{topology.subject_root}.traffic.alert.>"
        sub = await js.pull_subscribe(
            subject,
            stream=topology.traffic_stream,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE),
        )
        try:
            info = await sub.consumer_info()
            pending = int(info.num_pending or 0)
            while pending > 0:
                try:
                    msgs = await sub.fetch(min(batch, pending), timeout=5)
                except TimeoutError:
                    break
                events: list[AlertRaised | AlertDelivery] = []
                for m in msgs:
                    pending -= 1
                    last = max(last, int(m.metadata.sequence.stream))
                    with contextlib.suppress(Exception):  # what the live writer dead-letters, replay skips
                        event = codec.decode(m.data)
                        if isinstance(event, (AlertRaised, AlertDelivery)):
                            events.append(event)
                if events:
                    await log.write_many(events)
                    count += len(events)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
    finally:
        await nc.close()
        await log.close()
    return ReplayReport(count, last)
