"""Issue 2 end to end: the official openai SDK through the gateway, events on
real JetStream, rows in real Postgres and DuckDB; the projector stopped
while traffic flows; NATS restarted in the middle of a load run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import openai
import pytest

from ingress.gateway import create_app, start_gateway
from ingress.gateway.app import GatewayServer
from nexus.sim import SimServer, SimSettings, start_sim
from nexus.wiring import start_projector
from projections.duckfile import open_duckdb
from projections.projector import Projector
from streams.config_snapshot import ConfigSnapshot
from streams.config_validation import parse_config
from streams.publisher import EVENTS_SPILLED, Publisher
from streams.topology import Topology
from tests.gateway.conftest import SECRET, config_yaml, free_port, make_keys
from tests.inprocess import in_process_snapshot
from tests.services import PrivateNats

pytestmark = pytest.mark.integration


@dataclass
class Spine:
    sim: SimServer
    gateway: GatewayServer
    publisher: Publisher
    snapshot: ConfigSnapshot
    key: str
    endpoints: dict[str, Any]
    topology: Topology

    def client(self, **kw: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.gateway.url, api_key=self.key, max_retries=0, **kw)


async def make_spine(nats_url: str, pg_dsn: str, topology: Topology, tmp: Path, **cfg: int) -> Spine:
    sim = await start_sim(SimSettings(api_key="sk-sim-test"))
    keys = make_keys()
    snapshot = in_process_snapshot(parse_config(config_yaml(sim.port, free_port(), keys, **cfg)), SECRET)
    publisher = Publisher(nats_url, topology, tmp / "outbox.sqlite", ack_timeout_s=1.0, retry_backoff_s=0.1)
    await publisher.start()
    app = create_app(snapshot, publisher, env={"SIM_TEST_KEY": "sk-sim-test"})
    gateway = await start_gateway(app)
    ep = {"nats_url": nats_url, "postgres_dsn": pg_dsn, "duckdb_path": str(tmp / "analytics.duckdb")}
    return Spine(sim, gateway, publisher, snapshot, keys.full, ep, topology)


async def close_spine(s: Spine) -> None:
    await s.gateway.close()
    await s.publisher.close()
    await s.sim.close()


@pytest.fixture
async def spine(nats_url: str, pg_dsn: str, topology: Topology, tmp_path: Path) -> AsyncIterator[Spine]:
    s = await make_spine(nats_url, pg_dsn, topology, tmp_path)
    yield s
    await close_spine(s)


async def _rows(projector: Projector) -> dict[str, list[dict[str, Any]]]:
    """Read both stores over connections of our own (the lanes keep theirs)."""
    settings = projector.settings
    assert settings.postgres_dsn and settings.duckdb_path
    conn = await asyncpg.connect(settings.postgres_dsn)
    try:
        pg = [dict(r) for r in await conn.fetch("SELECT * FROM traffic_event")]
    finally:
        await conn.close()

    def duck() -> list[dict[str, Any]]:
        with open_duckdb(settings.duckdb_path) as db:
            cur = db.execute("SELECT * FROM traffic_event")
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    return {"postgres": pg, "duckdb": await asyncio.to_thread(duck)}


async def _wait_rows(projector: Projector, count: int, timeout: float) -> dict[str, list[dict[str, Any]]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = await _rows(projector)
        complete = {
            n: [r for r in rs if r.get("completed_at") is not None or r.get("status")]
            for n, rs in rows.items()
        }
        if all(len(v) >= count for v in complete.values()) or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.02)


async def test_row_in_postgres_and_duckdb_within_one_second_matching_the_response(spine: Spine) -> None:
    projector, stop = await start_projector(spine.endpoints, spine.topology)
    try:
        async with spine.client() as client:
            resp = await client.chat.completions.with_raw_response.create(
                model="sim-small", messages=[{"role": "user", "content": "count the tokens of this prompt"}]
            )
            done = time.monotonic()
            completion = resp.parse()
            request_id = resp.headers["x-nexus-request-id"]
            # A stream too: its usage arrives in the final chunk.
            stream = await client.chat.completions.create(
                model="sim-small",
                messages=[{"role": "user", "content": "and now stream it"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [c async for c in stream]
        stream_usage = chunks[-1].usage
        assert completion.usage is not None and stream_usage is not None
        rows = await _wait_rows(projector, 2, timeout=1.0)
        elapsed = time.monotonic() - done
        assert elapsed < 1.5, f"rows took {elapsed:.2f}s"
        for store, store_rows in rows.items():
            by_id = {r["request_id"]: r for r in store_rows}
            row = by_id[request_id]
            assert row["status"] == 200, store
            assert row["prompt_tokens"] == completion.usage.prompt_tokens, store
            assert row["completion_tokens"] == completion.usage.completion_tokens, store
            assert row["total_tokens"] == completion.usage.total_tokens, store
            expected_cost = (
                completion.usage.prompt_tokens * 1.0 + completion.usage.completion_tokens * 2.0
            ) / 1e6
            assert row["cost_usd"] == pytest.approx(expected_cost), store
            assert (row["org_id"], row["project_id"], row["key_id"]) == ("acme", "web", "k-full")
            streamed = [r for r in store_rows if r["stream"]]
            assert len(streamed) == 1 and streamed[0]["total_tokens"] == stream_usage.total_tokens
            assert streamed[0]["ttft_ms"] is not None
    finally:
        await stop()


async def _fire(spine: Spine, n: int, concurrency: int = 32) -> list[int]:
    sem = asyncio.Semaphore(concurrency)
    statuses: list[int] = []
    async with spine.client(timeout=20) as client:

        async def one(i: int) -> None:
            async with sem:
                try:
                    r = await client.chat.completions.with_raw_response.create(
                        model="sim-small", messages=[{"role": "user", "content": f"request number {i}"}]
                    )
                    statuses.append(r.status_code)
                except openai.APIStatusError as exc:
                    statuses.append(exc.status_code)
                except openai.APIConnectionError:
                    statuses.append(0)

        await asyncio.gather(*(one(i) for i in range(n)))
    return statuses


@pytest.mark.slow
async def test_refused_and_failed_requests_leave_rows_saying_what_was_received(spine: Spine) -> None:
    # A 401 is refused before the key is known or the body read; the row
    # still says what arrived (issue 12 item 5: it had no endpoint, path,
    # method, client, user agent or time).  A failed call keeps its model.
    projector, stop = await start_projector(spine.endpoints, spine.topology)
    try:
        agent = {"User-Agent": "refused-client/1.0"}
        async with aiohttp.ClientSession(headers=agent) as http:
            bad_key = {"Authorization": "Bearer nvk_" + "0" * 64}
            body = {"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]}
            async with http.post(f"{spine.gateway.url}/chat/completions", json=body, headers=bad_key) as r:
                assert r.status == 401
                refused = r.headers["x-nexus-request-id"]
            async with http.get(f"{spine.gateway.url}/nope") as r:
                assert r.status == 404
                unknown = r.headers["x-nexus-request-id"]
        async with spine.client() as client:
            with pytest.raises(openai.APIStatusError) as info:
                await client.chat.completions.create(
                    model="flaky", messages=[{"role": "user", "content": "hi"}]
                )
        failed = info.value.response.headers["x-nexus-request-id"]
        rows = await _wait_rows(projector, 3, timeout=5.0)
        for store, store_rows in rows.items():
            by_id = {r["request_id"]: r for r in store_rows}
            row = by_id[refused]
            assert (row["status"], row["error_code"], row["error_stage"]) == (
                401,
                "invalid_api_key",
                "auth",
            ), store
            assert (row["endpoint"], row["path"], row["method"]) == (
                "chat",
                "/v1/chat/completions",
                "POST",
            ), store
            assert (row["client_ip"], row["user_agent"]) == ("127.0.0.1", "refused-client/1.0"), store
            assert row["ingress_format"] == "openai" and not row["requested_model"], store
            assert row["received_at"] is not None and row["received_at"] <= row["completed_at"], store
            assert row["key_id"] in (None, "") and row["request_bytes"] is None, store  # never read
            row = by_id[unknown]
            assert (row["status"], row["path"], row["method"]) == (404, "/v1/nope", "GET"), store
            assert row["error_code"] == "unknown_url" and row["received_at"] is not None, store
            row = by_id[failed]
            assert row["status"] == info.value.status_code and row["outcome"] == "failed", store
            assert (row["model"], row["provider"], row["key_id"]) == ("flaky", "sim-503", "k-full"), store
            assert row["requested_model"] == "flaky" and row["request_bytes"] > 0, store
    finally:
        await stop()


async def test_projector_stopped_during_1000_requests_then_exactly_1000_rows(spine: Spine) -> None:
    statuses = await _fire(spine, 1000)
    assert statuses.count(200) == 1000
    assert await spine.publisher.flush(20)
    projector, stop = await start_projector(spine.endpoints, spine.topology)
    try:
        async with asyncio.timeout(60):
            await projector.caught_up()
        rows = await _rows(projector)
        for store, store_rows in rows.items():
            assert len(store_rows) == 1000, store
            assert all(r["status"] == 200 and r["total_tokens"] > 0 for r in store_rows), store
        # Restarting the projector re-reads nothing twice.
        await stop()
        projector, stop = await start_projector(spine.endpoints, spine.topology)
        async with asyncio.timeout(30):
            await projector.caught_up()
        assert {k: len(v) for k, v in (await _rows(projector)).items()} == {"postgres": 1000, "duckdb": 1000}
    finally:
        await stop()


@pytest.mark.slow
async def test_nats_restart_during_load_fails_no_request_and_loses_no_event(
    pg_dsn: str, tmp_path: Path
) -> None:
    server = PrivateNats(tmp_path / "nats")
    server.start()
    topology = Topology(prefix="SPINE")
    spine = await make_spine(server.url, pg_dsn, topology, tmp_path, max_inflight=512)
    spilled_before = EVENTS_SPILLED._value.get()
    try:
        load = asyncio.create_task(_fire(spine, 1500, concurrency=24))
        await asyncio.sleep(0.4)
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(1.5)
        await asyncio.to_thread(server.start)
        statuses = await load
        assert EVENTS_SPILLED._value.get() > spilled_before, "the outage must have sent events to the outbox"
        assert statuses.count(200) == 1500, f"non-200 statuses: {sorted(set(statuses))}"
        assert await spine.publisher.flush(30)
        projector, stop = await start_projector(spine.endpoints, topology)
        try:
            async with asyncio.timeout(60):
                last = await projector.caught_up()
            rows = await _rows(projector)
            for store, store_rows in rows.items():
                assert len(store_rows) == 1500, store
                assert all(r["status"] == 200 and r["total_tokens"] > 0 for r in store_rows), store
            # Exactly once on the stream too: every event id appears once.
            import nats as nats_client

            from streams import codec

            nc = await nats_client.connect(server.url)
            sub = await nc.jetstream().subscribe(topology.traffic_wildcard, ordered_consumer=True)
            ids = []
            async with asyncio.timeout(30):
                while len(ids) < last:
                    ids.append(codec.decode((await sub.next_msg(timeout=5)).data).id)
            await nc.close()
            assert len(ids) == len(set(ids))
        finally:
            await stop()
    finally:
        await close_spine(spine)
        server.stop()
