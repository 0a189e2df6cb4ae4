"""How ``nexus up`` builds each component from the endpoints it started.

Each ``start_*`` returns what the caller needs and an async stopper, so the
runner can stop components in the reverse order it started them.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from ingress.gateway.app import create_app, default_node_id
from ingress.gateway.app import start_gateway as serve_gateway
from ingress.quota.resp import PipelinedValkey
from processors.quota import QuotaProcessor
from projections.projector import Projector
from projections.settings import ProjectorSettings
from streams.config import ConfigSnapshot
from streams.jetstream import connect, ensure_streams
from streams.publisher import Publisher
from streams.spill import SpillStore
from streams.topology import Topology

log = logging.getLogger("nexus.up")

# Where quota counters live in Valkey: the gateway reserves and the quota
# processor settles under the same prefix (the processor CLI's default).
QUOTA_KEY_PREFIX = os.environ.get("NEXUS_VALKEY_PREFIX", "nexus:")

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


async def start_quota_processor(
    snapshot: ConfigSnapshot, ep: Mapping[str, Any], topology: Topology
) -> tuple[QuotaProcessor, Stopper]:
    """The quota processor: settles UsageRecorded events on the counters the
    gateway reserves on (its position is kept with the counters)."""
    proc = QuotaProcessor(
        snapshot.config,
        nats_url=ep["nats_url"],
        valkey_url=ep["valkey_url"],
        topology=topology,
        key_prefix=QUOTA_KEY_PREFIX,
    )
    await proc.start()
    return proc, proc.stop


def quota_valkey(url: str) -> Any:
    """The gateway's Valkey client: a bounded pool, so a burst queues for a
    connection instead of opening one per request."""
    import valkey.asyncio as avalkey

    pool = avalkey.BlockingConnectionPool.from_url(
        url, max_connections=256, timeout=30, socket_timeout=None, socket_connect_timeout=5
    )  # the gate bounds each call (QuotaGate.timeout_s)
    return avalkey.Valkey(connection_pool=pool)


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
    valkey = quota_valkey(ep["valkey_url"]) if ep.get("valkey_url") else None
    # The quota gate's scripts go over one pipelined connection of their own.
    reserve = PipelinedValkey.from_url(ep["valkey_url"]) if ep.get("valkey_url") else None
    app = create_app(
        snapshot,
        publisher,
        node_id=node_id,
        spill=SpillStore(js, topology.spill_bucket),
        valkey=valkey,
        valkey_prefix=QUOTA_KEY_PREFIX,
        quota_client=reserve,
    )
    gw = snapshot.config.gateway
    try:
        server = await serve_gateway(app, host=host or gw.host, port=gw.port if port is None else port)
    except OSError as exc:
        await publisher.close()
        await nc.close()
        if valkey is not None:
            await valkey.aclose()
            await valkey.connection_pool.aclose()
        if reserve is not None:
            await reserve.aclose()
        raise RuntimeError(f"cannot listen on {host or gw.host}:{gw.port}: {exc.strerror}") from None

    async def stop() -> None:
        await server.close()
        await publisher.close()
        await nc.drain()
        if valkey is not None:
            await valkey.aclose()
            await valkey.connection_pool.aclose()
        if reserve is not None:
            await reserve.aclose()

    return f"http://{server.host}:{server.port}", stop


async def wait_forever() -> None:
    await asyncio.Event().wait()
