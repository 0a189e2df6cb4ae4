"""The projection worker as an object to embed (``nexus up``) or run alone
(``nexus project``): one lane per enabled store, each following the traffic
stream from its own checkpoint."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType

from nats.aio.client import Client as NATS

from projections.analytics.store import AnalyticsDuckDBStore
from projections.lane import Lane, ProgressFn
from projections.pg_store import PostgresStore
from projections.settings import STORES, ProjectorSettings
from projections.store import Store, StoreError
from streams.jetstream import connect, ensure_streams

log = logging.getLogger("nexus.projections")


def nats_callbacks(closing: Callable[[], bool] = lambda: False) -> dict[str, Callable[..., Awaitable[None]]]:
    """Short log lines instead of nats-py's tracebacks (a NATS restart is an
    expected event for a long-running worker), and while NATS stays away
    one line a minute, not one per reconnect attempt."""
    state = {"errors": 0}

    async def error(exc: Exception) -> None:
        if state["errors"] % 120 == 0:
            log.warning("nats: %s", exc or type(exc).__name__)
        state["errors"] += 1

    async def disconnected() -> None:
        if not closing():
            log.warning("nats: disconnected; reconnecting")

    async def reconnected() -> None:
        state["errors"] = 0
        log.info("nats: reconnected")

    return {"error_cb": error, "disconnected_cb": disconnected, "reconnected_cb": reconnected}


def build_stores(settings: ProjectorSettings, names: Sequence[str] | None = None) -> list[Store]:
    """The stores ``names`` (default: every enabled one) as configured."""
    wanted = list(names) if names is not None else settings.enabled_stores()
    stores: list[Store] = []
    for name in wanted:
        if name not in STORES:
            raise StoreError(f"unknown projection store {name!r} (choose from {', '.join(STORES)})")
        if name == "postgres":
            if not settings.postgres_dsn:
                raise StoreError("the postgres projection needs NEXUS_POSTGRES_DSN")
            stores.append(PostgresStore(settings.postgres_dsn))
        else:
            if not settings.duckdb_path:
                raise StoreError("the duckdb projection needs NEXUS_DUCKDB_PATH")
            # The analytics store is the DuckDB projection plus its rollups
            # (minute/hour/day), maintained batch by batch next to traffic_event.
            stores.append(AnalyticsDuckDBStore(settings.duckdb_path))
    if not stores:
        raise StoreError("no projection store configured (set NEXUS_POSTGRES_DSN and/or NEXUS_DUCKDB_PATH)")
    return stores


class Projector:
    def __init__(
        self,
        settings: ProjectorSettings,
        *,
        stores: Sequence[Store] | None = None,
        nc: NATS | None = None,
    ) -> None:
        self.settings = settings
        self._stores = list(stores) if stores is not None else build_stores(settings)
        self._nc = nc
        self._own_nc = nc is None
        self._lanes: dict[str, Lane] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closing = False

    async def start(self) -> None:
        """Connect, create the streams if needed, open every store (so a bad
        DSN or a busy store fails here, loudly) and start following."""
        self._closing = False
        if self._nc is None:
            self._nc = await connect(
                self.settings.nats_url, name=self.settings.name, **nats_callbacks(lambda: self._closing)
            )
        js = self._nc.jetstream()
        await ensure_streams(js, self.settings.topology)
        try:
            for store in self._stores:
                await store.open()
        except BaseException:
            for store in self._stores:
                await store.close()
            raise
        for store in self._stores:
            lane = Lane(
                store,
                js,
                self.settings.topology,
                batch_size=self.settings.batch_size,
                fetch_timeout_s=self.settings.fetch_timeout_s,
            )
            self._lanes[store.name] = lane
            self._tasks[store.name] = asyncio.create_task(lane.run(), name=f"projection-{store.name}")

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for lane in self._lanes.values():
            await lane.store.close()
        self._lanes.clear()
        if self._own_nc and self._nc is not None:
            self._closing = True
            # close, not drain: nothing is published, and drain waits out its
            # timeout when NATS is down.
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = None

    async def __aenter__(self) -> Projector:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def positions(self) -> dict[str, int]:
        """The last stream sequence each store has applied."""
        return {name: lane.applied for name, lane in self._lanes.items()}

    def healthy(self) -> bool:
        return bool(self._tasks) and all(not t.done() for t in self._tasks.values())

    async def wait_for(self, seq: int) -> None:
        """Return once every store has applied stream sequence ``seq``; bound
        it with ``asyncio.timeout``."""
        for lane in self._lanes.values():
            await lane.wait_for(seq)

    async def caught_up(self) -> int:
        """Wait until every store has applied everything in the stream now;
        returns that stream sequence.  Bound it with ``asyncio.timeout``."""
        if self._nc is None:
            raise RuntimeError("projector not started")
        info = await self._nc.jetstream().stream_info(self.settings.topology.traffic_stream)
        last = int(info.state.last_seq)
        await self.wait_for(last)
        return last

    async def replay(
        self, names: Sequence[str] | None = None, progress: ProgressFn | None = None
    ) -> dict[str, int]:
        """Rebuild stores (default: all of this projector's) from the start of
        the stream while the projector runs: their lanes pause, the tables are
        dropped and re-filled, and the lanes resume from the new checkpoint."""
        from projections.replay import replay_stores

        if self._nc is None:
            raise RuntimeError("projector not started")
        chosen = [n for n in (names or list(self._lanes)) if n in self._lanes]
        for name in chosen:
            self._tasks[name].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tasks[name]
            self._lanes[name].applied = 0  # waiters wait for the rebuilt store
        try:
            return await replay_stores(
                self._nc.jetstream(),
                self.settings,
                [self._lanes[n].store for n in chosen],
                progress=progress,
            )
        finally:
            for name in chosen:
                lane = self._lanes[name]
                self._tasks[name] = asyncio.create_task(lane.run(), name=f"projection-{name}")
