"""One contract, every store (STYLE item 10): the Postgres and the DuckDB
projection stores pass the same tests against the real databases."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import duckdb
import pytest

from projections import schema
from projections.duck_store import DuckDBStore
from projections.pg_store import PostgresStore, migrate
from projections.store import Store, StoreBusy
from projections.traffic import COLUMN_NAMES
from streams.events import Event, RequestReceived, Usage, UsageRecorded
from tests.projections.helpers import failed_request, ok_request, retried_request

STREAM = "TEST_TRAFFIC"


def _items(events: list[Event], start: int = 1) -> list[tuple[int, object]]:
    return list(enumerate(events, start))


def _by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["request_id"]: r for r in rows}


class StoreContract:
    """Subclasses provide a fresh, open ``store`` fixture."""

    async def test_a_batch_lands_with_tokens_cost_and_latency(self, store: Store) -> None:
        events = ok_request(1, stream=True) + failed_request(2)
        assert await store.apply(STREAM, _items(events), len(events)) == len(events)
        rows = _by_id(await store.rows())
        ok = rows["req-000001"]
        assert ok["prompt_tokens"] == 11 and ok["completion_tokens"] == 6 and ok["total_tokens"] == 17
        assert ok["cached_tokens"] == 1 and ok["reasoning_tokens"] == 1
        assert ok["cost_usd"] == pytest.approx(11 * 0.15e-6 + 6 * 0.6e-6)
        assert (ok["latency_ms"], ok["ttft_ms"], ok["upstream_ms"]) == (41.75, 14.5, 38.5)
        assert (ok["org_id"], ok["project_id"], ok["key_id"]) == ("org-1", "proj-1", "key-1")
        assert (ok["provider"], ok["provider_model"], ok["status"], ok["stream"]) == (
            "sim",
            "sim-small",
            200,
            True,
        )
        assert ok["first_seen_at"] is not None and ok["completed_at"] > ok["first_seen_at"]
        failed = rows["fail-000002"]
        assert (failed["status"], failed["error_code"], failed["error_type"]) == (
            504,
            "upstream_timeout",
            "timeout_error",
        )
        assert failed["outcome"] == "failed" and failed["prompt_tokens"] is None
        assert await store.position(STREAM) == len(events)

    async def test_reapplying_a_batch_changes_nothing(self, store: Store) -> None:
        events = ok_request(1) + retried_request(2)
        await store.apply(STREAM, _items(events), len(events))
        before = await store.rows()
        # the same sequences again (redelivery): skipped by the checkpoint
        assert await store.apply(STREAM, _items(events), len(events)) == 0
        # the same facts under new sequences (published twice): harmless
        again = _items(events, start=len(events) + 1)
        assert await store.apply(STREAM, again, again[-1][0]) == len(events)
        assert await store.rows() == before
        assert await store.position(STREAM) == 2 * len(events)

    async def test_a_partly_new_batch_applies_only_the_new_part(self, store: Store) -> None:
        first = ok_request(1)
        await store.apply(STREAM, _items(first), 4)
        overlap = _items(first + ok_request(2))  # sequences 1..8, 1..4 already applied
        assert await store.apply(STREAM, overlap, 8) == 4
        assert len(await store.rows()) == 2

    async def test_rows_and_checkpoint_commit_together(self, store: Store) -> None:
        await store.apply(STREAM, _items(ok_request(1)), 4)
        before = await store.rows()
        poison = UsageRecorded(
            request_id="req-000009", usage=Usage(prompt_tokens=2**63)
        )  # no BIGINT holds it
        batch = _items([*ok_request(2), poison], start=5)
        with pytest.raises(Exception):  # noqa: B017 - each database words it differently
            await store.apply(STREAM, batch, 9)
        # neither the good rows of the batch nor its checkpoint were written
        assert await store.rows() == before
        assert await store.position(STREAM) == 4
        # and the store is still usable
        assert await store.apply(STREAM, _items(ok_request(3), start=10), 13) == 4
        assert await store.position(STREAM) == 13

    async def test_arrival_order_does_not_matter(self, store: Store) -> None:
        # Every permutation of a retried request's five facts, each
        # permutation under its own request id; transaction k carries the
        # k-th fact of every permutation, so each request's facts reach the
        # database one transaction at a time in that permutation's order.
        perms = list(itertools.permutations(range(5)))
        facts = [retried_request(0, prefix=f"perm{n:03d}") for n in range(len(perms))]
        for k in range(5):
            batch = [(k * len(perms) + n + 1, facts[n][perm[k]]) for n, perm in enumerate(perms)]
            await store.apply(STREAM, batch, batch[-1][0])
        rows = await store.rows()
        assert len(rows) == 120
        shapes = {tuple((k, v) for k, v in r.items() if k != "request_id") for r in rows}
        assert len(shapes) == 1
        row = rows[0]
        assert (row["provider"], row["upstream_attempt"], row["attempts"], row["total_tokens"]) == (
            "prov-b",
            2,
            2,
            10,
        )

    async def test_ignored_events_still_move_the_checkpoint(self, store: Store) -> None:
        assert await store.apply(STREAM, [], 42) == 0
        assert await store.position(STREAM) == 42
        assert await store.rows() == []
        assert await store.position("OTHER_STREAM") == 0

    async def test_reset_empties_rows_and_checkpoint(self, store: Store) -> None:
        await store.apply(STREAM, _items(ok_request(1)), 4)
        await store.reset()
        assert await store.rows() == []
        assert await store.position(STREAM) == 0
        await store.apply(STREAM, _items(ok_request(1)), 4)
        assert len(await store.rows()) == 1

    async def test_rows_have_every_declared_column(self, store: Store) -> None:
        await store.apply(STREAM, [(1, RequestReceived(request_id="r"))], 1)
        assert tuple((await store.rows())[0]) == COLUMN_NAMES


class TestPostgresStore(StoreContract):
    @pytest.fixture
    async def store(self, pg_dsn: str) -> AsyncIterator[PostgresStore]:
        s = PostgresStore(pg_dsn)
        await s.open()
        yield s
        await s.close()

    async def test_migrations_match_the_declared_columns(self, store: PostgresStore, pg_dsn: str) -> None:
        conn = await asyncpg.connect(pg_dsn)
        try:
            cols = await conn.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'traffic_event' "
                "ORDER BY ordinal_position"
            )
            tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        finally:
            await conn.close()
        assert tuple(r[0] for r in cols) == COLUMN_NAMES
        assert {r[0] for r in tables} == {*schema.OWNED_TABLES, "schema_migrations"}

    async def test_concurrent_start_ups_migrate_once(self, pg_dsn: str) -> None:
        conns = [await asyncpg.connect(pg_dsn) for _ in range(4)]
        try:
            results = await asyncio.gather(*(migrate(c) for c in conns))
            assert sorted(len(r) for r in results) == [0, 0, 0, len(schema.migrations("postgres"))]
            count = await conns[0].fetchval(
                "SELECT count(*) FROM schema_migrations WHERE component = 'projections'"
            )
            assert count == len(schema.migrations("postgres"))
        finally:
            for c in conns:
                await c.close()

    async def test_reset_keeps_a_view_another_component_built(
        self, store: PostgresStore, pg_dsn: str
    ) -> None:
        await store.apply(STREAM, _items(ok_request(1)), 4)
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute(
                "CREATE VIEW spend AS SELECT org_id, sum(cost_usd) AS usd FROM traffic_event GROUP BY 1"
            )
            await store.reset()
            assert await conn.fetch("SELECT * FROM spend") == []
            await store.apply(STREAM, _items(ok_request(1)), 4)
            assert [r["org_id"] for r in await conn.fetch("SELECT * FROM spend")] == ["org-1"]
        finally:
            await conn.close()
        assert await store.position(STREAM) == 4

    async def test_a_second_writer_is_refused(self, store: PostgresStore, pg_dsn: str) -> None:
        with pytest.raises(StoreBusy, match="another projector"):
            await PostgresStore(pg_dsn).open()
        await store.close()
        other = PostgresStore(pg_dsn)
        await other.open()  # free again once the first writer is gone
        await other.close()


class TestDuckDBStore(StoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[DuckDBStore]:
        s = DuckDBStore(tmp_path / "a.duckdb")
        await s.open()
        yield s
        await s.close()

    async def test_migrations_match_the_declared_columns(self, store: DuckDBStore) -> None:
        await store.close()
        conn = duckdb.connect(str(store.path), read_only=True)
        try:
            cols = conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'traffic_event' "
                "ORDER BY ordinal_position"
            ).fetchall()
            tables = conn.execute("SELECT table_name FROM information_schema.tables").fetchall()
            applied = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
        finally:
            conn.close()
        assert tuple(r[0] for r in cols) == COLUMN_NAMES
        assert {r[0] for r in tables} == {*schema.OWNED_TABLES, "schema_migrations"}
        assert applied == (len(schema.migrations("duckdb")),)
        await store.open()  # re-open: migrations are not applied twice

    async def test_rows_survive_reopening_the_file(self, store: DuckDBStore) -> None:
        await store.apply(STREAM, _items(ok_request(1)), 4)
        await store.close()
        again = DuckDBStore(store.path)
        await again.open()
        try:
            assert len(await again.rows()) == 1 and await again.position(STREAM) == 4
        finally:
            await again.close()
