"""Every request is an event, the ones shed at admission too (issue 13
item 5: 967 of 2,000 sheds left no trace).  A shed request leaves one
compact RequestFailed (429 overloaded, stage admission, the gate's reason),
and through JetStream and the projector it is a traffic_event row like any
other: rows = responses."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from nexus.wiring import start_projector
from streams.events import RequestFailed
from streams.topology import Topology
from tests.e2e.test_spine import close_spine, make_spine
from tests.gateway.conftest import Stack, make_stack

CHAT = {"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]}


async def _burst(url: str, key: str, n: int) -> list[tuple[int, str]]:
    async with aiohttp.ClientSession() as http:

        async def one() -> tuple[int, str]:
            async with http.post(
                f"{url}/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}
            ) as r:
                await r.read()
                return r.status, r.headers["x-nexus-request-id"]

        return await asyncio.gather(*(one() for _ in range(n)))


def _slow_sim(stack_sim: object) -> None:
    state = stack_sim.state  # type: ignore[attr-defined]
    state.settings = state.settings.__class__(latency_ms=300, api_key="sk-sim-test")


async def test_a_shed_request_leaves_a_compact_request_failed() -> None:
    stack: Stack = await make_stack(max_inflight=2)
    try:
        _slow_sim(stack.sim)
        answers = await _burst(stack.url, stack.keys.full, 10)
    finally:
        await stack.gateway.close()
        await stack.sim.close()
    shed = [rid for status, rid in answers if status == 429]
    assert shed and len(shed) < 10
    for rid in shed:
        events = stack.events.of(rid)
        assert len(events) == 1 and isinstance(events[0], RequestFailed)
        e = events[0]
        assert (e.status, e.error_code, e.stage, e.reason) == (429, "overloaded", "admission", "inflight")
        assert e.node.id == "gw-test"


@pytest.mark.integration
async def test_every_response_of_an_overload_burst_is_a_traffic_event_row(
    nats_url: str, pg_dsn: str, topology: Topology, tmp_path: Path
) -> None:
    spine = await make_spine(nats_url, pg_dsn, topology, tmp_path, max_inflight=4)
    _projector, stop = await start_projector(spine.endpoints, spine.topology)
    try:
        _slow_sim(spine.sim)
        answers = await _burst(spine.gateway.url, spine.key, 200)
        statuses = [s for s, _ in answers]
        assert statuses.count(429) > 100 and statuses.count(200) >= 4
        conn = await asyncpg.connect(pg_dsn)
        try:
            deadline = time.monotonic() + 30
            while True:
                rows = await conn.fetch(
                    "SELECT request_id, status, error_code, error_stage FROM traffic_event"
                    " WHERE status IS NOT NULL"
                )
                if len(rows) >= len(answers) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
        finally:
            await conn.close()
    finally:
        await stop()
        await close_spine(spine)
    by_id = {r["request_id"]: r for r in rows}
    print(f"\noverload burst: {len(answers)} answered ({statuses.count(429)} shed), {len(rows)} rows")
    assert len(rows) == len(answers)  # nothing answered is invisible
    for status, rid in answers:
        assert by_id[rid]["status"] == status
        if status == 429:
            assert (by_id[rid]["error_code"], by_id[rid]["error_stage"]) == ("overloaded", "admission")
