"""How ``nexus up`` builds each component from the endpoints it started.

Each ``start_*`` returns what the caller needs and an async stopper, so the
runner can stop components in the reverse order it started them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from ingress.gateway.app import create_app, default_node_id
from ingress.gateway.app import start_gateway as serve_gateway
from projections.projector import Projector
from projections.settings import ProjectorSettings
from streams.config import ConfigSnapshot
from streams.jetstream import connect, ensure_streams
from streams.publisher import Publisher
from streams.spill import SpillStore
from streams.topology import Topology

log = logging.getLogger("nexus.up")

Stopper = Callable[[], Awaitable[None]]


async def start_projector(ep: Mapping[str, Any], topology: Topology) -> tuple[Projector, Stopper]:
    settings = ProjectorSettings(
        nats_url=ep["nats_url"],
        postgres_dsn=ep["postgres_dsn"],
        duckdb_path=ep["duckdb_path"],
        topology=topology,
    )
    projector = Projector(settings)
    await projector.start()
    return projector, projector.stop


async def start_gateway(
    snapshot: ConfigSnapshot,
    ep: Mapping[str, Any],
    topology: Topology,
    data: Path,
    *,
    host: str | None = None,
    port: int | None = None,
) -> tuple[str, Stopper]:
    node_id = snapshot.config.gateway.node_id or default_node_id().split("-")[0]
    publisher = Publisher(
        ep["nats_url"], topology, data / f"outbox-{node_id}.sqlite", name=f"nexus-gateway-{node_id}"
    )
    await publisher.start()
    nc = await connect(ep["nats_url"], name=f"nexus-gateway-spill-{node_id}")
    js = nc.jetstream()
    await ensure_streams(js, topology)
    app = create_app(snapshot, publisher, node_id=node_id, spill=SpillStore(js, topology.spill_bucket))
    gw = snapshot.config.gateway
    try:
        server = await serve_gateway(app, host=host or gw.host, port=gw.port if port is None else port)
    except OSError as exc:
        await publisher.close()
        await nc.close()
        raise RuntimeError(f"cannot listen on {host or gw.host}:{gw.port}: {exc.strerror}") from None

    async def stop() -> None:
        await server.close()
        await publisher.close()
        await nc.drain()

    return f"http://{server.host}:{server.port}", stop


async def wait_forever() -> None:
    await asyncio.Event().wait()
