"""The rollup side catches up on its own: after the base projector ran
without it (or crashed between the two transactions), and after a schema
version change.  Its Prometheus metrics say where it is."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from prometheus_client import REGISTRY

from projections.analytics.schema import GRAINS
from projections.analytics.store import AnalyticsDuckDBStore
from projections.duck_store import DuckDBStore
from projections.projector import Projector
from projections.store import Store
from streams.jetstream import connect
from streams.topology import Topology
from tests.analytics.pipeline import caught_up, settings_for
from tests.analytics.traffic import generate, publish

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def _follow(nats_url: str, topology: Topology, db: Path, store: Store) -> int:
    projector = Projector(settings_for(nats_url, topology, db, batch_size=1000), stores=[store])
    await projector.start()
    try:
        return await caught_up(projector)
    finally:
        await projector.stop()


# Compliance outcomes come only from events, so they are compared apart.
TRAFFIC_COLUMNS = (
    "bucket, org_id, project_id, key_id, model, provider, requests, ok, errors, errors_4xx, errors_5xx, "
    "streamed, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, total_tokens, cost_usd, "
    "cache_savings_usd, cache_hits, latency_sum_ms, latency_p50_ms, latency_p95_ms, latency_p99_ms, "
    "latency_max_ms, ttft_p50_ms, ttft_p95_ms"
)


def _rollups(db: Path, columns: str = "*") -> dict[str, list[tuple[object, ...]]]:
    conn = duckdb.connect(str(db), read_only=True)
    try:
        return {
            g: conn.execute(f"SELECT {columns} FROM analytics.rollup_{g} ORDER BY ALL").fetchall()
            for g in GRAINS
        }
    finally:
        conn.close()


def _metric(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    assert value is not None, name
    return value


async def test_rollups_catch_up_after_the_base_store_ran_alone(
    nats_url: str, topology: Topology, tmp_path: Path
) -> None:
    events, expected = generate(500, days=2, seed=5)
    await publish(nats_url, topology, events, tmp_path)
    reference = tmp_path / "reference.duckdb"
    await _follow(nats_url, topology, reference, AnalyticsDuckDBStore(reference))

    # The base store alone (today's wiring, or a crash right after its
    # commit): traffic_event is complete, the rollups know nothing.
    db = tmp_path / "nexus.duckdb"
    last = await _follow(nats_url, topology, db, DuckDBStore(db))
    events_before = _metric("nexus_analytics_events_total")
    await _follow(nats_url, topology, db, AnalyticsDuckDBStore(db))
    assert _rollups(db) == _rollups(reference)
    conn = duckdb.connect(str(db), read_only=True)
    try:
        assert conn.execute("SELECT sum(requests) FROM analytics.rollup_day").fetchone() == (
            expected.requests,
        )
        checkpoints = dict(conn.execute("SELECT projection, last_seq FROM projection_checkpoint").fetchall())
    finally:
        conn.close()
    assert checkpoints == {"traffic_event": last, "analytics_rollup": last}
    assert _metric("nexus_analytics_events_total") - events_before == len(events)
    assert _metric("nexus_analytics_checkpoint") == last
    for grain in GRAINS:
        assert _metric("nexus_analytics_stale_buckets", grain=grain) == 0
    assert _metric("nexus_analytics_staleness_seconds") == 0

    # A file written under another schema version is rebuilt, here after the
    # first half of the stream aged out: the traffic rollups still cover it
    # (from traffic_event); compliance counts come back for what the stream holds.
    conn = duckdb.connect(str(db))
    try:
        conn.execute("UPDATE analytics.meta SET value = '0' WHERE key = 'schema_version'")
        conn.execute("DELETE FROM analytics.rollup_hour")
    finally:
        conn.close()
    nc = await connect(nats_url, name="analytics-purge")
    try:
        await nc.jetstream().purge_stream(topology.traffic_stream, seq=last // 2)
    finally:
        await nc.close()
    await _follow(nats_url, topology, db, AnalyticsDuckDBStore(db))
    assert _rollups(db, TRAFFIC_COLUMNS) == _rollups(reference, TRAFFIC_COLUMNS)
    kept, full = (sum(row[0] for row in _rollups(path, "findings")["day"]) for path in (db, reference))
    assert 0 < kept < full
