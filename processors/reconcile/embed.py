"""Start the reconciler inside another process (``nexus up``): it owns its
NATS connection and returns the reconciler and an async stop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from processors.reconcile.reconciler import Reconciler, ReconcileSettings
from streams.jetstream import connect, ensure_streams
from streams.topology import Topology

Stopper = Callable[[], Awaitable[None]]


async def start_reconciler(
    nats_url: str, topology: Topology, settings: ReconcileSettings | None = None
) -> tuple[Reconciler, Stopper]:
    nc = await connect(nats_url, name="nexus-reconcile")
    reconciler = Reconciler(nc, topology, settings)
    try:
        await ensure_streams(nc.jetstream(), topology)
        await reconciler.start()
    except BaseException:
        await nc.close()
        raise

    async def stop() -> None:
        await reconciler.stop()
        await nc.close()

    return reconciler, stop
