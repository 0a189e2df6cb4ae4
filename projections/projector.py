"""The projection worker as an object to embed (``nexus up``) or run alone
(``nexus project``): one lane reads the traffic stream for every enabled
store, each of which keeps its own checkpoint."""

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
from projections.rebuild import replay_stores
from projections.settings import STORES, ProjectorSettings
from projections.store import Store, StoreError
from streams.jetstream import connect, ensure_streams
from streams.tasks import stop_tasks

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
        self._lane: Lane | None = None
        self._task: asyncio.Task[None] | None = None
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
        # One reader for every store: each message is read, decoded and
        # folded once (see projections.lane).
        self._lane = Lane(
            self._stores,
            self._nc,
            self.settings.topology,
            batch_size=self.settings.batch_size,
            fetch_timeout_s=self.settings.fetch_timeout_s,
        )
        self._start_lane()

    def _start_lane(self) -> None:
        assert self._lane is not None
        self._task = asyncio.create_task(self._lane.run(), name=f"projection-{self._lane.stream}")

    async def _stop_lane(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await stop_tasks(task)

    async def stop(self) -> None:
        await self._stop_lane()
        if self._lane is not None:
            for store in self._lane.stores:
                await store.close()
        self._lane = None
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
        return dict(self._lane.applied) if self._lane is not None else {}

    def healthy(self) -> bool:
        return self._task is not None and not self._task.done()

    async def wait_for(self, seq: int) -> None:
        """Return once every store has applied stream sequence ``seq``; bound
        it with ``asyncio.timeout``."""
        if self._lane is not None:
            await self._lane.wait_for(seq)

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
        the stream while the projector runs: the lane pauses, the tables are
        dropped and re-filled, and the lane resumes from the checkpoints."""
        if self._nc is None or self._lane is None:
            raise RuntimeError("projector not started")
        lane = self._lane
        chosen = [s for s in lane.stores if names is None or s.name in names]
        await self._stop_lane()
        for store in chosen:
            lane.applied[store.name] = 0  # waiters wait for the rebuilt store
        try:
            return await replay_stores(self._nc, self.settings, chosen, progress=progress)
        finally:
            self._start_lane()
