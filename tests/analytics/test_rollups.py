"""Rollups maintained live by the projector against a real JetStream stream:
they match the traffic that was generated, and a replay into a fresh DuckDB
rebuilds them identical to the live ones."""

from __future__ import annotations

import asyncio
import math
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from projections.analytics.schema import GRAINS
from projections.analytics.store import AnalyticsDuckDBStore
from projections.projector import Projector
from projections.rebuild import replay_stores
from streams.events import Event, RequestCompleted, RequestReceived, Tenant, UsageRecorded, uuid7
from streams.jetstream import connect
from streams.topology import Topology
from tests.analytics.pipeline import caught_up, settings_for
from tests.analytics.traffic import DAY_MS, generate, publish

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TABLES = [f"analytics.rollup_{g}" for g in GRAINS] + ["analytics.requests"]


def _dump(path: Path, table: str) -> list[tuple[object, ...]]:
    conn = duckdb.connect(str(path), read_only=True)
    try:
        return conn.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
    finally:
        conn.close()


def _moved_request(end_ms: int) -> tuple[list[Event], list[Event]]:
    """A request whose completion is published first (in minute M) and whose
    receipt, stamped in minute M-1, arrives later: the request must move out
    of M's rollup and into M-1's."""
    rid = uuid7()
    tenant = Tenant(org_id="org_late", project_id="proj_late", key_id="vk_late")
    minute = (end_ms - DAY_MS // 2) // 60_000 * 60_000
    first = [
        UsageRecorded(
            request_id=rid,
            tenant=tenant,
            occurred_at_ms=minute + 500,
            provider="openai",
            model="gpt-4o",
            cost_usd=0.125,
        ),
        RequestCompleted(
            request_id=rid,
            tenant=tenant,
            occurred_at_ms=minute + 500,
            latency_ms=1234.5,
            provider="openai",
        ),
    ]
    later = [
        RequestReceived(request_id=rid, tenant=tenant, occurred_at_ms=minute - 700, requested_model="gpt-4o")
    ]
    return first, later


async def test_live_rollups_match_the_traffic_and_a_replay(
    nats_url: str, topology: Topology, tmp_path: Path
) -> None:
    events, expected = generate(800, days=3, seed=11)
    end_ms = max(e.occurred_at_ms for e in events)
    moved_first, moved_later = _moved_request(end_ms)
    live = tmp_path / "live.duckdb"
    # Small batches and a short coarse interval: many batches, many
    # incremental refreshes of the same buckets while traffic arrives.
    projector = Projector(
        settings_for(nats_url, topology, live, batch_size=300),
        stores=[AnalyticsDuckDBStore(live, refresh_every_s=0.2)],
    )
    await projector.start()
    try:
        third = len(events) // 3
        await publish(nats_url, topology, events[:third] + moved_first, tmp_path / "p1")
        await caught_up(projector)
        await publish(nats_url, topology, events[third : 2 * third], tmp_path / "p2")
        await asyncio.sleep(0.3)
        await publish(nats_url, topology, events[2 * third :] + moved_later, tmp_path / "p3")
        await caught_up(projector)
    finally:
        await projector.stop()

    # What an analyst notices: totals match what the gateway did.
    conn = duckdb.connect(str(live), read_only=True)
    try:
        for grain in GRAINS:
            req, err, cost, tokens = conn.execute(
                "SELECT sum(requests), sum(errors), sum(cost_usd), sum(total_tokens) "
                f"FROM analytics.rollup_{grain}"
            ).fetchone()
            assert req == expected.requests + 1, grain
            assert err == expected.errors, grain
            assert cost == expected.cost_usd + Decimal("0.125"), grain
            assert tokens == expected.total_tokens, grain
            blocked, redacted, findings = conn.execute(
                f"SELECT sum(blocked), sum(redacted), sum(findings) FROM analytics.rollup_{grain}"
            ).fetchone()
            assert (blocked, redacted, findings) == (expected.blocked, expected.redacted, expected.findings)
        by_org = dict(
            conn.execute("SELECT org_id, sum(requests) FROM analytics.rollup_day GROUP BY org_id").fetchall()
        )
        auth_failures = by_org.pop("")
        assert by_org.pop("org_late") == 1
        assert sum(by_org.values()) + auth_failures == expected.requests
        # The late receipt moved the request one minute earlier.
        late = conn.execute(
            "SELECT bucket, requests, latency_p50_ms FROM analytics.rollup_minute WHERE org_id = 'org_late'"
        ).fetchall()
        assert len(late) == 1 and late[0][1] == 1 and late[0][2] == 1234.5
        assert late[0][0].timestamp() * 1000 == moved_later[0].occurred_at_ms // 60_000 * 60_000
        # Percentiles are exact: p95 of one day and model, recomputed here.
        day, model = conn.execute(
            "SELECT bucket, model FROM analytics.rollup_day WHERE org_id <> '' ORDER BY requests DESC LIMIT 1"
        ).fetchone()
        lat = sorted(
            r[0]
            for r in conn.execute(
                "SELECT latency_ms FROM analytics.requests WHERE day = ? AND model = ? "
                "AND org_id = 'org_acme' AND outcome IS NOT NULL",
                [day.date(), model],
            ).fetchall()
        )
        got = conn.execute(
            "SELECT quantile_cont(latency_ms, 0.95) FROM analytics.requests WHERE day = ? AND model = ? "
            "AND org_id = 'org_acme' AND outcome IS NOT NULL",
            [day.date(), model],
        ).fetchone()[0]
        pos = 0.95 * (len(lat) - 1)
        lo = math.floor(pos)
        want = lat[lo] + (lat[min(lo + 1, len(lat) - 1)] - lat[lo]) * (pos - lo)
        assert got == pytest.approx(want)
        assert conn.execute("SELECT count(*) FROM analytics.dirty").fetchone()[0] == 0
    finally:
        conn.close()

    # Replay the same stream into a fresh file: identical, row for row.
    fresh = tmp_path / "fresh.duckdb"
    nc = await connect(nats_url, name="analytics-replay-test")
    store = AnalyticsDuckDBStore(fresh)
    try:
        await replay_stores(nc, settings_for(nats_url, topology, fresh, 2000), [store])
    finally:
        await store.close()
        await nc.close()
    for table in TABLES:
        live_rows, replayed = _dump(live, table), _dump(fresh, table)
        assert live_rows, table
        assert live_rows == replayed, table
