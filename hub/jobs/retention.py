"""Body-capture retention as a Hub job: stored audit bodies and spilled
bodies older than the audit settings allow are purged
(``audit.body_retention_days``, ``audit.spill_retention_days``; 0 keeps
them).  The hash chain covers body digests, never bodies, so a purge never
breaks ``nexus audit verify``.  The run's counts are its record (the
``admin.job_run`` events are in the audit chain)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
from nats.js import JetStreamContext

from hub.jobs.registry import JobContext, Registry
from streams import retention
from streams.config_siem import AuditConfig
from streams.topology import Topology


def register_body_retention(
    registry: Registry, dsn: str, js: JetStreamContext, topology: Topology, *, every_s: float = 3600
) -> None:
    async def run(ctx: JobContext) -> str:
        res = ctx.state.get("settings", "audit")
        policy: AuditConfig = res.spec if res is not None else AuditConfig()
        conn: asyncpg.Connection[Any] = await asyncpg.connect(dsn)
        try:
            bodies = await retention.purge_bodies(conn, older_than_days=policy.body_retention_days)
        finally:
            await conn.close()
        ctx.count("bodies_purged", bodies)
        spilled = await retention.purge_spill(
            js, topology.spill_bucket, older_than=dt.timedelta(days=policy.spill_retention_days)
        )
        ctx.count("spilled_purged", spilled)
        ctx.idle = not bodies and not spilled
        return (
            f"purged {bodies} stored bodies older than {policy.body_retention_days} days and "
            f"{spilled} spilled bodies older than {policy.spill_retention_days} days (0: kept)"
        )

    registry.add(
        "body-retention",
        every_s=every_s,
        run=run,
        description="captured bodies older than the audit settings' retention are purged",
    )
