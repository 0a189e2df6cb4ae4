"""Rebuilding stores from the traffic stream: the tables dropped and
re-filled through the same lane the live projector runs, from one read of
the stream.  Used by ``replay`` (the command) and by a running projector's
own ``replay`` (which pauses its lane meanwhile)."""

from __future__ import annotations

from collections.abc import Sequence

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from projections.lane import Lane, ProgressFn
from projections.settings import ProjectorSettings
from projections.store import Store, StoreError


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
