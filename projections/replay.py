"""``replay``: drop a projection store's tables and rebuild them from the
start of the traffic stream, through the same lane and store code the live
projector uses, so the result is the live projection by construction (and a
test checks it row by row).  Every store is rebuilt from one read of the
stream."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from projections.lane import Lane, ProgressFn
from projections.projector import build_stores, nats_callbacks
from projections.settings import ProjectorSettings
from projections.store import Store, StoreError
from streams.jetstream import connect


async def stream_last_seq(js: JetStreamContext, settings: ProjectorSettings) -> tuple[int, int]:
    """(first, last) sequence of the traffic stream."""
    name = settings.topology.traffic_stream
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        raise StoreError(f"stream {name} does not exist on {settings.nats_url}: nothing to replay") from None
    return int(info.state.first_seq), int(info.state.last_seq)


async def replay_stores(
    nc: NATS,
    settings: ProjectorSettings,
    stores: Sequence[Store],
    *,
    progress: ProgressFn | None = None,
) -> dict[str, int]:
    """Rebuild the stores up to the stream's last sequence as of now, all
    from one read of the stream; returns the checkpoint each store ends at."""
    first, target = await stream_last_seq(nc.jetstream(), settings)
    for store in stores:
        await store.open()
        await store.reset()
    if target == 0 or first > target:
        # An empty stream (or one whose messages all aged out): nothing
        # to apply, but the checkpoint still moves past what is gone.
        for store in stores:
            await store.apply(settings.topology.traffic_stream, [], target)
        return {store.name: target for store in stores}
    if not stores:
        return {}
    lane = Lane(
        stores,
        nc,
        settings.topology,
        batch_size=settings.batch_size,
        fetch_timeout_s=settings.fetch_timeout_s,
    )
    await lane.run(until=target, progress=progress)
    return {store.name: lane.applied[store.name] for store in stores}


async def replay(
    settings: ProjectorSettings,
    names: Sequence[str] | None = None,
    *,
    progress: ProgressFn | None = None,
) -> dict[str, int]:
    """Rebuild the named stores (default: every enabled one) with nothing
    else writing to them; a running projector makes this fail with
    ``StoreBusy`` (use ``Projector.replay`` to rebuild under a live one)."""
    stores = build_stores(settings, names)
    # A one-off command: give up on an unreachable NATS after a few tries.
    closing = False
    nc = await connect(
        settings.nats_url,
        name=f"{settings.name}-replay",
        max_reconnect_attempts=5,
        **nats_callbacks(lambda: closing),
    )
    try:
        return await replay_stores(nc, settings, stores, progress=progress)
    finally:
        for store in stores:
            await store.close()
        closing = True
        with contextlib.suppress(Exception):
            await nc.close()
