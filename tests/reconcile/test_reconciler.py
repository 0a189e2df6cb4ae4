"""The reconciler against the real NATS: requests whose node restarted or
went quiet are recorded as aborted, once; finished requests never are; a
restarted reconciler finds the open requests again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from processors.reconcile import Reconciler, ReconcileSettings
from streams import codec, heartbeat
from streams.events import Node, RequestAborted, RequestCompleted, RequestReceived, Tenant, now_ms
from streams.jetstream import connect, ensure_streams
from streams.topology import Topology

pytestmark = pytest.mark.integration


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    client = await connect(nats_url, name="reconcile-tests")
    yield client
    await client.close()


@pytest.fixture
async def js(nc: NATS, topology: Topology) -> AsyncIterator[JetStreamContext]:
    ctx = nc.jetstream()
    await ensure_streams(ctx, topology)
    yield ctx
    for name in [s.name for s in topology.streams()] + [f"KV_{topology.heartbeat_bucket}"]:
        with contextlib.suppress(Exception):
            await ctx.delete_stream(name)


async def _beat(js: JetStreamContext, topology: Topology, node: Node, started: int, beat: int) -> None:
    kv = await heartbeat.bucket(js, topology)
    record = heartbeat.Heartbeat(kind=node.kind, id=node.id, started_at_ms=started, beat_at_ms=beat)
    await kv.put(heartbeat.key(node), heartbeat.encode(record))


async def _publish(js: JetStreamContext, topology: Topology, *events: Any) -> None:
    for e in events:
        await js.publish(topology.subject_for(e), codec.encode(e), headers={"Nats-Msg-Id": e.id})


async def _aborted(js: JetStreamContext, topology: Topology) -> dict[str, RequestAborted]:
    info = await js.stream_info(topology.traffic_stream)
    out: dict[str, RequestAborted] = {}
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        ev = codec.decode((await js.get_msg(topology.traffic_stream, seq)).data)
        if isinstance(ev, RequestAborted):
            assert ev.request_id not in out, f"{ev.request_id} aborted twice"
            out[ev.request_id] = ev
    return out


def _received(rid: str, node: Node, at: int) -> RequestReceived:
    return RequestReceived(request_id=rid, node=node, occurred_at_ms=at, tenant=Tenant(org_id="acme"))


async def test_restarted_lost_and_silent_nodes(nc: NATS, js: JetStreamContext, topology: Topology) -> None:
    t0 = now_ms()
    restarted, lost, alive = (Node(kind="gateway", id=n) for n in ("gw-restarted", "gw-lost", "gw-alive"))
    legacy = Node(kind="gateway", id="gw-without-heartbeats")
    await _beat(js, topology, restarted, started=t0 - 60_000, beat=t0)
    await _beat(js, topology, lost, started=t0 - 60_000, beat=t0)
    await _beat(js, topology, alive, started=t0 - 60_000, beat=t0)
    reconciler = Reconciler(nc, topology, ReconcileSettings(lost_after_s=2.0, max_open_s=300.0, sweep_s=0.3))
    await reconciler.start()
    try:
        await _publish(
            js,
            topology,
            _received("r-restarted", restarted, t0 - 1000),
            _received("r-lost", lost, t0 - 1000),
            _received("r-alive", alive, t0 - 1000),
            _received("r-done", restarted, t0 - 1000),
            RequestCompleted(request_id="r-done", node=restarted),
            _received("r-legacy", legacy, t0 - 600_000),  # ten minutes ago
        )
        async with asyncio.timeout(10):
            while "r-legacy" not in await _aborted(js, topology):
                await asyncio.sleep(0.1)
        assert set(await _aborted(js, topology)) == {"r-legacy"}  # every node is alive so far
        assert set(reconciler.open) == {"r-restarted", "r-lost", "r-alive"}
        # gw-restarted comes back as a new process; gw-lost stops beating;
        # gw-alive keeps beating.
        await _beat(js, topology, restarted, started=now_ms(), beat=now_ms())
        async with asyncio.timeout(15):
            while True:
                await _beat(js, topology, alive, started=t0 - 60_000, beat=now_ms())
                got = await _aborted(js, topology)
                if {"r-restarted", "r-lost", "r-legacy"} <= set(got):
                    break
                await asyncio.sleep(0.3)
        await asyncio.sleep(1.0)
        got = await _aborted(js, topology)
    finally:
        await reconciler.stop()
    assert set(got) == {"r-restarted", "r-lost", "r-legacy"}
    assert got["r-restarted"].cause == "node_restarted"
    assert got["r-lost"].cause == "node_lost"
    assert got["r-legacy"].cause == "open_too_long"  # no heartbeat at all: only the last resort
    assert got["r-lost"].tenant.org_id == "acme" and got["r-lost"].received_at_ms == t0 - 1000
    assert set(reconciler.open) == {"r-alive"}


async def test_a_restarted_reconciler_finds_the_open_requests_again(
    nc: NATS, js: JetStreamContext, topology: Topology
) -> None:
    node = Node(kind="gateway", id="gw-1")
    t0 = now_ms()
    await _beat(js, topology, node, started=t0 - 60_000, beat=t0)
    settings = ReconcileSettings(lost_after_s=3600.0, max_open_s=3600.0, sweep_s=0.3)
    first = Reconciler(nc, topology, settings)
    await first.start()
    await _publish(js, topology, *(_received(f"r{i}", node, t0 - 500) for i in range(50)))
    await _publish(js, topology, *(RequestCompleted(request_id=f"r{i}", node=node) for i in range(0, 50, 2)))
    async with asyncio.timeout(10):
        while len(first.open) != 25:
            await asyncio.sleep(0.1)
    await first.stop()
    second = Reconciler(nc, topology, settings)
    await second.start()
    try:
        async with asyncio.timeout(10):
            while len(second.open) != 25:
                await asyncio.sleep(0.1)
        assert set(second.open) == {f"r{i}" for i in range(1, 50, 2)}
        await _beat(js, topology, node, started=now_ms(), beat=now_ms())  # the node restarts
        async with asyncio.timeout(10):
            while second.open:
                await asyncio.sleep(0.1)
    finally:
        await second.stop()
    assert set(await _aborted(js, topology)) == {f"r{i}" for i in range(1, 50, 2)}
