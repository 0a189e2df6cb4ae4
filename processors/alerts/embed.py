"""Start the alerts worker inside another process (``nexus up``): it owns
its NATS connections and returns the worker and an async stop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from processors.alerts.worker import AlertsWorker
from streams.config_alerts import AlertsConfig
from streams.topology import Topology

Stopper = Callable[[], Awaitable[None]]


async def start_alerts(
    nats_url: str,
    topology: Topology,
    config: AlertsConfig,
    *,
    postgres_dsn: str | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[AlertsWorker, Stopper]:
    """Raises streams.config_base.ConfigError when a channel's secret is
    missing, before anything is started."""
    log = None
    if postgres_dsn:
        from processors.alerts.log import DeliveryLog

        log = DeliveryLog(postgres_dsn)
        await log.open()
    worker = AlertsWorker(nats_url, topology, config, env=env, log_writer=log.write if log else None)
    try:
        await worker.start()
    except BaseException:
        if log is not None:
            await log.close()
        raise

    async def stop() -> None:
        await worker.stop()
        if log is not None:
            await log.close()

    return worker, stop
