"""``replay``: drop a projection store's tables and rebuild them from the
start of the traffic stream, through the same lane and store code the live
projector uses, so the result is the live projection by construction (and a
test checks it row by row).  Every store is rebuilt from one read of the
stream."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from projections.lane import ProgressFn
from projections.projector import build_stores, nats_callbacks
from projections.rebuild import replay_stores
from projections.settings import ProjectorSettings
from streams.jetstream import connect


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
