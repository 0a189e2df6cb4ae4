"""The projector against the real NATS (JetStream), Postgres and DuckDB."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from nats.js import JetStreamContext
from prometheus_client import REGISTRY

from projections.duck_store import DuckDBStore
from projections.pg_store import PostgresStore
from projections.projector import Projector
from projections.settings import ProjectorSettings
from streams.codec import encode
from streams.jetstream import connect, ensure_streams
from streams.topology import Topology
from tests.projections.helpers import failed_request, ok_request, publish, publish_raw, retried_request

pytestmark = pytest.mark.integration

_IDLE_PROBE = 2.5  # longer than the lane's idle probe interval


async def _rows(settings: ProjectorSettings) -> dict[str, list[dict[str, object]]]:
    """Both tables, read through fresh store objects (after the projector stopped)."""
    out: dict[str, list[dict[str, object]]] = {}
    assert settings.postgres_dsn and settings.duckdb_path
    for store in (PostgresStore(settings.postgres_dsn, exclusive=False), DuckDBStore(settings.duckdb_path)):
        await store.open()
        try:
            out[store.name] = await store.rows()
        finally:
            await store.close()
    return out


async def test_a_request_is_in_both_stores_within_one_second(
    js: JetStreamContext, topology: Topology, settings: ProjectorSettings
) -> None:
    restarts = REGISTRY.get_sample_value("nexus_projection_consumer_restarts_total", {"store": "postgres"})
    async with Projector(settings) as projector:
        await asyncio.sleep(_IDLE_PROBE)  # idle first: fetches time out, the consumer is probed
        events = ok_request(7, stream=True)
        seq = await publish(js, topology, events)
        started = time.monotonic()
        async with asyncio.timeout(1.0):
            await projector.wait_for(seq)
        assert time.monotonic() - started < 1.0
        assert REGISTRY.get_sample_value(
            "nexus_projection_consumer_restarts_total", {"store": "postgres"}
        ) in (
            None,
            restarts,
        )  # a quiet stream is not an error
    for rows in (await _rows(settings)).values():
        assert len(rows) == 1
        row = rows[0]
        assert row["request_id"] == "req-000007"
        assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (17, 12, 29)
        assert row["cost_usd"] == pytest.approx(17 * 0.15e-6 + 12 * 0.6e-6)
        assert (row["latency_ms"], row["ttft_ms"], row["upstream_ms"]) == (41.75, 14.5, 38.5)
        assert (row["provider"], row["status"], row["stream"]) == ("sim", 200, True)


async def test_a_thousand_requests_sent_while_stopped_give_a_thousand_rows(
    js: JetStreamContext, topology: Topology, settings: ProjectorSettings
) -> None:
    # a first run establishes the checkpoints, then the worker is down
    async with Projector(settings) as projector:
        await projector.wait_for(await publish(js, topology, ok_request(0, prefix="before")))
    events = [ev for i in range(1000) for ev in ok_request(i)]
    last = await publish(js, topology, events)
    async with Projector(settings) as projector:
        async with asyncio.timeout(30):
            await projector.wait_for(last)
        assert projector.positions() == {"postgres": last, "duckdb": last}
    rows = await _rows(settings)
    expected_tokens = sum(ev.usage.total_tokens for ev in events if hasattr(ev, "usage"))
    for name, table in rows.items():
        live = [r for r in table if str(r["request_id"]).startswith("req-")]
        assert len(live) == 1000, name
        assert sum(int(r["total_tokens"]) for r in live) == expected_tokens, name  # type: ignore[call-overload]
        assert all(r["status"] == 200 and r["provider"] == "sim" for r in live), name


async def test_duplicates_and_restarts_never_double_count(
    js: JetStreamContext, topology: Topology, settings: ProjectorSettings
) -> None:
    events = ok_request(1) + retried_request(2) + failed_request(3)
    await publish(js, topology, events)
    # the same publish again inside the duplicate window: JetStream drops it
    await publish(js, topology, events)
    # the usage fact again under a new message id: stored twice in the stream
    usage = events[2]
    last = await publish_raw(js, topology.subject_for(usage), encode(usage), f"{usage.id}-again")
    assert last == len(events) + 1
    async with Projector(settings) as projector:
        async with asyncio.timeout(5):
            await projector.wait_for(last)
    first = await _rows(settings)
    # restart: resumes after the checkpoint, nothing is applied twice
    applied_before = REGISTRY.get_sample_value("nexus_projection_events_applied_total", {"store": "postgres"})
    async with Projector(settings) as projector:
        await asyncio.sleep(0.3)
        assert projector.positions() == {"postgres": last, "duckdb": last}
    applied_after = REGISTRY.get_sample_value("nexus_projection_events_applied_total", {"store": "postgres"})
    assert applied_after == applied_before
    second = await _rows(settings)
    assert first == second
    for table in second.values():
        assert len(table) == 3
        ok = next(r for r in table if r["request_id"] == "req-000001")
        assert ok["total_tokens"] == 17 and ok["cost_usd"] == pytest.approx(11 * 0.15e-6 + 6 * 0.6e-6)


async def test_unknown_and_broken_messages_are_skipped_but_passed(
    js: JetStreamContext, topology: Topology, settings: ProjectorSettings
) -> None:
    await publish(js, topology, ok_request(1))
    await publish_raw(
        js, topology.traffic_subject("future.event"), b'{"type":"future.event","id":"f1"}', "f1"
    )
    await publish_raw(js, topology.traffic_subject("request.received"), b"{not json", "broken-1")
    last = await publish(js, topology, ok_request(2))
    async with Projector(settings) as projector:
        async with asyncio.timeout(5):
            await projector.wait_for(last)
        assert await projector.caught_up() == last
    assert REGISTRY.get_sample_value(
        "nexus_projection_events_skipped_total", {"store": "duckdb", "reason": "unknown_type"}
    )
    assert REGISTRY.get_sample_value("nexus_projection_lag_events", {"store": "duckdb"}) == 0
    for table in (await _rows(settings)).values():
        assert [r["request_id"] for r in table] == ["req-000001", "req-000002"]


# --- a NATS restart ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_nats(port: int, store: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("nats-server") or os.path.join(os.path.dirname(os.sys.executable), "nats-server")
    proc = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("private nats-server did not start")


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[tuple[int, Path, list[subprocess.Popen[bytes]]]]:
    """A nats-server of our own (the machine's one is shared): restartable."""
    port, store = _free_port(), tmp_path / "nats"
    procs = [_start_nats(port, store)]
    yield port, store, procs
    for p in procs:
        p.terminate()
        p.wait(10)


@pytest.mark.slow
async def test_the_projector_rides_out_a_nats_restart(
    private_nats: tuple[int, Path, list[subprocess.Popen[bytes]]], settings: ProjectorSettings
) -> None:
    port, store, procs = private_nats
    url = f"nats://127.0.0.1:{port}"
    cfg = ProjectorSettings(**{**settings.__dict__, "nats_url": url})
    publisher = await connect(url, name="restart-test")
    js = publisher.jetstream()
    await ensure_streams(js, cfg.topology)
    async with Projector(cfg) as projector:
        first = await publish(js, cfg.topology, [ev for i in range(50) for ev in ok_request(i)])
        async with asyncio.timeout(5):
            await projector.wait_for(first)
        procs[0].terminate()
        procs[0].wait(10)
        await asyncio.sleep(1.0)
        procs.append(_start_nats(port, store))
        async with asyncio.timeout(10):
            while not publisher.is_connected:
                await asyncio.sleep(0.05)
        last = await publish(js, cfg.topology, [ev for i in range(50, 100) for ev in ok_request(i)])
        async with asyncio.timeout(15):
            await projector.wait_for(last)
    await publisher.close()
    for name, table in (await _rows(cfg)).items():
        assert len(table) == 100, name
        assert sum(int(r["total_tokens"]) for r in table) == sum(  # type: ignore[call-overload]
            ev.usage.total_tokens for i in range(100) for ev in ok_request(i) if hasattr(ev, "usage")
        ), name


async def test_a_lost_postgres_connection_resumes_from_the_checkpoint(
    js: JetStreamContext, topology: Topology, settings: ProjectorSettings
) -> None:
    assert settings.postgres_dsn
    async with Projector(settings) as projector:
        first = await publish(js, topology, [ev for i in range(30) for ev in ok_request(i)])
        async with asyncio.timeout(5):
            await projector.wait_for(first)
        # what a Postgres restart or failover does to the worker's session
        admin = await asyncpg.connect(settings.postgres_dsn)
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        assert killed >= 1
        last = await publish(js, topology, [ev for i in range(30, 60) for ev in ok_request(i)])
        async with asyncio.timeout(15):
            await projector.wait_for(last)
    rows = await _rows(settings)
    for name, table in rows.items():
        assert len(table) == 60, name
    # the same facts in both (timestamps differ only in type: timestamptz vs UTC timestamp)
    assert [(r["request_id"], r["total_tokens"], r["cost_usd"]) for r in rows["postgres"]] == [
        (r["request_id"], r["total_tokens"], r["cost_usd"]) for r in rows["duckdb"]
    ]
