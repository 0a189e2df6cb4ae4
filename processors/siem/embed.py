"""Start the SIEM forwarder inside another process (``nexus up``): it owns
its NATS connection and returns the forwarder and an async stop.  A config
without enabled sinks starts nothing and returns a no-op stop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from prometheus_client import CollectorRegistry

from processors.siem.forwarder import SiemForwarder
from streams.config_siem import SiemConfig
from streams.jetstream import connect, ensure_streams
from streams.topology import Topology

Stopper = Callable[[], Awaitable[None]]


async def _nothing() -> None:
    return None


async def start_siem(
    nats_url: str,
    topology: Topology,
    config: SiemConfig,
    *,
    env: Mapping[str, str] | None = None,
    registry: CollectorRegistry | None = None,
) -> tuple[SiemForwarder | None, Stopper]:
    """Raises streams.config_base.ConfigError when a sink's credential variable
    is not set, before anything is started."""
    if not any(s.enabled for s in config.sinks):
        return None, _nothing
    nc = await connect(nats_url, name="nexus-siem")
    forwarder = SiemForwarder(nc, topology, config, env=env, registry=registry)
    try:
        await ensure_streams(nc.jetstream(), topology)
        await forwarder.start()
    except BaseException:
        await nc.close()
        raise

    async def stop() -> None:
        await forwarder.stop()
        await nc.close()

    return forwarder, stop
