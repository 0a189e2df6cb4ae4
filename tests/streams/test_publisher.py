"""The publisher against real nats-servers: batching, ordering, the outbox
while NATS is away, and exactly-once arrival after it returns."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest

from streams import codec
from streams.events import Node, RequestReceived, Tenant
from streams.publisher import Publisher
from streams.topology import Topology
from tests.services import PrivateNats

pytestmark = pytest.mark.integration


def _event(i: int) -> RequestReceived:
    return RequestReceived(
        request_id=f"req-{i}",
        node=Node(kind="gateway", id="t"),
        tenant=Tenant(org_id="o", project_id="p", key_id="k"),
        requested_model="m",
        path=f"/{i}",
    )


async def _stream_request_ids(url: str, topology: Topology) -> list[str]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(topology.traffic_stream)
        ids: list[str] = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(topology.traffic_stream, seq)
            ids.append(codec.decode(msg.data).request_id)
        return ids
    finally:
        await nc.close()


async def test_publishes_in_order_with_event_id_as_msg_id(
    nats_url: str, topology: Topology, tmp_path: Path
) -> None:
    pub = Publisher(nats_url, topology, tmp_path / "outbox.db")
    await pub.start()
    events = [_event(i) for i in range(1000)]
    for e in events:
        pub.emit(e)
    assert await pub.flush(10)
    # Publishing the same event again is absorbed by the duplicate window.
    pub.emit(events[0])
    assert await pub.flush(10)
    await pub.close()
    ids = await _stream_request_ids(nats_url, topology)
    assert ids == [f"req-{i}" for i in range(1000)]
    nc = await nats.connect(nats_url)
    msg = await nc.jetstream().get_msg(topology.traffic_stream, 1)
    assert msg.headers and msg.headers["Nats-Msg-Id"] == events[0].id
    await nc.close()


@pytest.mark.slow
async def test_nats_restart_mid_run_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    server = PrivateNats(tmp_path / "nats")
    server.start()
    topology = Topology(prefix="RESTART")
    pub = Publisher(server.url, topology, tmp_path / "outbox.db", ack_timeout_s=0.5, retry_backoff_s=0.1)
    try:
        await pub.start()
        for i in range(300):
            pub.emit(_event(i))
        await pub.flush(10)
        # Emit while the server goes away and comes back: emit never blocks.
        stopper = asyncio.get_running_loop().run_in_executor(None, server.stop)
        for i in range(300, 1000):
            pub.emit(_event(i))
            if i % 50 == 0:
                await asyncio.sleep(0.01)
        await stopper
        for i in range(1000, 1200):
            pub.emit(_event(i))
        await asyncio.sleep(0.5)
        assert pub.outbox_depth > 0, "events emitted while NATS was down must be in the outbox"
        server.start()
        assert await pub.flush(30), "the outbox must drain once NATS is back"
        ids = await _stream_request_ids(server.url, topology)
        assert sorted(ids, key=lambda s: int(s.split("-")[1])) == [f"req-{i}" for i in range(1200)]
        assert len(set(ids)) == 1200
        assert ids == [f"req-{i}" for i in range(1200)], "order must be preserved across the outage"
    finally:
        await pub.close()
        server.stop()


async def test_outbox_survives_a_restart_of_the_publisher(tmp_path: Path) -> None:
    server = PrivateNats(tmp_path / "nats")  # not started: NATS is away
    topology = Topology(prefix="OUTBOX")
    pub = Publisher(server.url, topology, tmp_path / "outbox.db", retry_backoff_s=0.1)
    await pub.start()
    for i in range(100):
        pub.emit(_event(i))
    await asyncio.sleep(0.3)
    await pub.close()
    server.start()
    try:
        again = Publisher(server.url, topology, tmp_path / "outbox.db", retry_backoff_s=0.1)
        assert again.outbox_depth == 100
        await again.start()
        assert await again.flush(15)
        await again.close()
        assert await _stream_request_ids(server.url, topology) == [f"req-{i}" for i in range(100)]
    finally:
        server.stop()
