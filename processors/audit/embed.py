"""Start the audit processor inside another process (``nexus up``): it owns
its NATS connection and returns the processor and an async stop.  With
``audit.enabled: false`` nothing starts and the stop is a no-op."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry

from processors.audit.processor import AuditProcessor
from streams.config_siem import AuditConfig
from streams.jetstream import connect, ensure_streams
from streams.topology import Topology

Stopper = Callable[[], Awaitable[None]]


async def _nothing() -> None:
    return None


async def start_audit(
    nats_url: str,
    postgres_dsn: str,
    topology: Topology,
    config: AuditConfig | None = None,
    *,
    registry: CollectorRegistry | None = None,
) -> tuple[AuditProcessor | None, Stopper]:
    if config is not None and not config.enabled:
        return None, _nothing
    nc = await connect(nats_url, name="nexus-audit")
    js = nc.jetstream()
    await ensure_streams(js, topology)
    processor = AuditProcessor(nc, postgres_dsn, topology, config=config, registry=registry)
    try:
        await processor.start()
    except BaseException:
        await nc.close()
        raise

    async def stop() -> None:
        await processor.stop()
        await nc.close()

    return processor, stop
