"""One reader for both stores (projections.lane): stores at different
checkpoints, a store failing mid-run and a projector stopped mid-batch all
end with every request exactly once in each store."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

import pytest
from nats.js import JetStreamContext

from projections.duck_store import DuckDBStore
from projections.lane import Lane
from projections.pg_store import PostgresStore
from projections.projector import Projector, build_stores
from projections.settings import ProjectorSettings
from projections.store import FoldedItems, Item, Store
from projections.traffic import fold
from streams.jetstream import connect
from streams.topology import Topology
from tests.projections.helpers import ok_request, publish, retried_request

pytestmark = pytest.mark.integration


async def _rows(settings: ProjectorSettings) -> dict[str, list[dict[str, object]]]:
    assert settings.postgres_dsn and settings.duckdb_path
    out: dict[str, list[dict[str, object]]] = {}
    for store in (PostgresStore(settings.postgres_dsn, exclusive=False), DuckDBStore(settings.duckdb_path)):
        await store.open()
        try:
            out[store.name] = await store.rows()
        finally:
            await store.close()
    return out


def _facts(rows: list[dict[str, object]]) -> list[tuple[object, ...]]:
    return [(r["request_id"], r["total_tokens"], r["cost_usd"], r["provider"], r["status"]) for r in rows]


class _FailsOnce:
    """A store that raises on its ``nth`` apply (after writing nothing)."""

    def __init__(self, inner: Store, nth: int) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls = 0
        self.nth = nth

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def position(self, stream: str) -> int:
        return await self.inner.position(stream)

    async def apply(self, stream: str, items: Sequence[Item], last_seq: int) -> int:
        self.calls += 1
        if self.calls == self.nth:
            raise ConnectionError("the database went away")
        return await self.inner.apply(stream, items, last_seq)

    async def reset(self) -> None:
        await self.inner.reset()

    async def rows(self) -> list[dict[str, object]]:
        return await self.inner.rows()


async def test_stores_at_different_checkpoints_both_end_with_every_row_once(
    js: JetStreamContext, topology: Topology, settings: ProjectorSettings
) -> None:
    first = await publish(js, topology, [ev for i in range(300) for ev in ok_request(i)])
    # Postgres alone first: it is ahead when both start from one reader.
    async with Projector(dataclasses.replace(settings, duckdb_path=None)) as projector:
        async with asyncio.timeout(20):
            await projector.wait_for(first)
    last = await publish(js, topology, [ev for i in range(300, 600) for ev in ok_request(i)])
    async with Projector(settings) as projector:
        async with asyncio.timeout(20):
            await projector.wait_for(last)
        assert projector.positions() == {"postgres": last, "duckdb": last}
    rows = await _rows(settings)
    assert len(rows["postgres"]) == len(rows["duckdb"]) == 600
    assert _facts(rows["postgres"]) == _facts(rows["duckdb"])


async def test_a_store_failing_mid_run_loses_and_doubles_nothing(
    js: JetStreamContext, topology: Topology, settings: ProjectorSettings
) -> None:
    small = dataclasses.replace(settings, batch_size=200)
    stores = build_stores(small)
    flaky_pg = _FailsOnce(stores[0], nth=3)  # postgres fails on its third batch
    flaky: list[Store] = [flaky_pg, stores[1]]
    events = [ev for i in range(500) for ev in ok_request(i)] + [
        ev for i in range(20) for ev in retried_request(i)
    ]
    last = await publish(js, topology, events)
    async with Projector(small, stores=flaky) as projector:
        async with asyncio.timeout(30):
            await projector.wait_for(last)
    assert flaky_pg.calls > 3  # it failed and resumed
    rows = await _rows(settings)
    assert len(rows["postgres"]) == len(rows["duckdb"]) == 520
    assert _facts(rows["postgres"]) == _facts(rows["duckdb"])
    tokens = sum(ev.usage.total_tokens for ev in events if hasattr(ev, "usage"))
    assert sum(int(r["total_tokens"]) for r in rows["duckdb"]) == tokens  # type: ignore[call-overload]


async def test_stopping_mid_batch_and_restarting_gives_exactly_n_rows(
    js: JetStreamContext, topology: Topology, settings: ProjectorSettings
) -> None:
    n = 2000
    last = await publish(js, topology, [ev for i in range(n) for ev in ok_request(i)])
    projector = Projector(dataclasses.replace(settings, batch_size=300))
    await projector.start()
    try:
        async with asyncio.timeout(20):
            await projector.wait_for(600)  # some batches in, more being written
    finally:
        await projector.stop()  # cancels the lane wherever it is
    async with Projector(settings) as projector:
        async with asyncio.timeout(30):
            await projector.wait_for(last)
    rows = await _rows(settings)
    assert len(rows["postgres"]) == len(rows["duckdb"]) == n
    assert _facts(rows["postgres"]) == _facts(rows["duckdb"])


async def test_a_lane_reads_past_its_window_with_small_batches(
    js: JetStreamContext, topology: Topology, settings: ProjectorSettings
) -> None:
    # batch 7: the pull window (2 x batch) is far smaller than the stream, so
    # the reader tops its requests up hundreds of times.
    last = await publish(js, topology, [ev for i in range(400) for ev in ok_request(i)])
    stores = build_stores(settings)
    nc = await connect(settings.nats_url, name="lane-window-test")
    try:
        lane = Lane(stores, nc, topology, batch_size=7, fetch_timeout_s=0.05)
        async with asyncio.timeout(60):
            await lane.run(until=last)
        assert lane.applied == {"postgres": last, "duckdb": last}
    finally:
        for store in stores:
            await store.close()
        await nc.close()
    rows = await _rows(settings)
    assert len(rows["postgres"]) == len(rows["duckdb"]) == 400


def test_a_folded_batch_carries_the_same_fold_the_stores_would_compute() -> None:
    from projections import schema
    from projections.store import fold_columns

    items: list[Item] = [(i + 1, ev) for i, ev in enumerate(ev for r in range(5) for ev in ok_request(r))]
    folded = FoldedItems(items)
    assert fold_columns(folded, 0) == (20, schema.columnar(list(fold(ev for _, ev in items).values())))
    # part of it already applied: folded afresh from the new part only
    new, columns = fold_columns(folded, 8)
    assert new == 12
    assert columns == schema.columnar(list(fold(ev for _, ev in items[8:]).values()))


def test_the_progress_bar_keeps_one_bar_per_store_when_reports_interleave() -> None:
    import io

    from projections.progress import ProgressBar

    out = io.StringIO()
    bar = ProgressBar(out=out)
    for pos in range(0, 1001, 10):
        bar("postgres", pos, 1000)
        bar("duckdb", pos, 1000)
    lines = out.getvalue().splitlines()
    # a line per decile per store (0 %, 10 %, ..., 100 %), not one per report
    assert sum(line.startswith("replay postgres") for line in lines) == 11
    assert sum(line.startswith("replay duckdb") for line in lines) == 11
    assert lines[-1].startswith("replay duckdb") and "100.0%" in lines[-1]


def test_decoded_events_are_not_tracked_by_the_cyclic_gc() -> None:
    import gc

    from streams.codec import decode, encode

    for ev in ok_request(1) + retried_request(2):
        back = decode(encode(ev))
        assert not gc.is_tracked(back) and not gc.is_tracked(back.tenant), type(back).__name__


@pytest.mark.slow
async def test_a_reader_gone_silent_is_replaced_and_the_lane_finishes(
    js: JetStreamContext,
    topology: Topology,
    settings: ProjectorSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streams import consumer as consumer_module
    from streams.pull import Msg, Puller, open_puller

    class _Silent:
        """A reader whose connection died without a word: nothing arrives."""

        async def start(self) -> None: ...

        async def stop(self) -> None: ...

        async def take(self, wait_s: float) -> list[Msg]:
            await asyncio.sleep(wait_s)
            return []

        async def acknowledge(self, replies: list[bytes], body: bytes = b"") -> None: ...

    opened: list[str] = []

    async def first_silent(nc: object, stream: str, consumer: str, *, window: int) -> Puller:
        opened.append(consumer)
        if len(opened) == 1:
            return _Silent()
        return await open_puller(nc, stream, consumer, window=window)  # type: ignore[arg-type]

    monkeypatch.setattr(consumer_module, "open_puller", first_silent)
    last = await publish(js, topology, [ev for i in range(200) for ev in ok_request(i)])
    async with Projector(settings) as projector:
        async with asyncio.timeout(30):
            await projector.wait_for(last)
    assert len(opened) >= 2  # the silent reader was given up and replaced
    rows = await _rows(settings)
    assert len(rows["postgres"]) == len(rows["duckdb"]) == 200
