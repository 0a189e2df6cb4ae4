"""The real pipeline for the analytics tests and the notebooks: events
published through ``streams.publisher.Publisher`` to a real JetStream stream,
projected into DuckDB by the base projector running the analytics store."""

from __future__ import annotations

import asyncio
from pathlib import Path

from projections.analytics.store import AnalyticsDuckDBStore
from projections.projector import Projector
from projections.settings import ProjectorSettings
from streams.events import Event
from streams.topology import Topology
from tests.analytics.traffic import publish


def settings_for(
    nats_url: str, topology: Topology, db_path: Path, batch_size: int = 500
) -> ProjectorSettings:
    return ProjectorSettings(
        nats_url=nats_url,
        postgres_dsn=None,
        duckdb_path=str(db_path),
        topology=topology,
        batch_size=batch_size,
        fetch_timeout_s=0.05,
    )


async def project(
    nats_url: str, topology: Topology, events: list[Event], db_path: Path, *, batch_size: int = 2000
) -> None:
    """Publish ``events`` and project the stream into ``db_path`` (closed
    afterwards, so notebooks can open it)."""
    await publish(nats_url, topology, events, db_path.parent)
    settings = settings_for(nats_url, topology, db_path, batch_size)
    projector = Projector(settings, stores=[AnalyticsDuckDBStore(db_path)])
    await projector.start()
    try:
        await caught_up(projector, 120)
    finally:
        await projector.stop()


async def caught_up(projector: Projector, timeout: float = 60) -> int:
    async with asyncio.timeout(timeout):
        return await projector.caught_up()
