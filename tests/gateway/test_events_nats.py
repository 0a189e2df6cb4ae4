"""The gateway with the real publisher: a request's events land in the
JetStream traffic stream (event id as Nats-Msg-Id), and a body over the
inline limit is spilled to the object store with a verifiable reference."""

from __future__ import annotations

from pathlib import Path

import nats
import openai
import pytest

from streams import codec
from streams.events import RequestCompleted, RequestReceived, UsageRecorded
from streams.jetstream import delete_streams, ensure_streams
from streams.publisher import Publisher
from streams.spill import SpillStore
from streams.topology import Topology
from tests.gateway.conftest import make_stack

pytestmark = pytest.mark.integration


async def _stream_events(url: str, topology: Topology) -> list[tuple[object, str]]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(topology.traffic_stream)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(topology.traffic_stream, seq)
            out.append((codec.decode(msg.data), (msg.headers or {}).get("Nats-Msg-Id", "")))
        await delete_streams(js, topology)
        return out
    finally:
        await nc.close()


async def test_request_events_reach_jetstream(nats_url: str, topology: Topology, tmp_path: Path) -> None:
    publisher = Publisher(nats_url, topology, tmp_path / "outbox.db")
    await publisher.start()
    stack = await make_stack(sink=publisher)
    try:
        async with openai.AsyncOpenAI(base_url=stack.url, api_key=stack.keys.full, max_retries=0) as c:
            raw = await c.chat.completions.with_raw_response.create(
                model="sim-small", messages=[{"role": "user", "content": "to the stream"}]
            )
        completion = raw.parse()
        assert await publisher.flush(10)
    finally:
        await stack.gateway.close()
        await stack.sim.close()
        await publisher.close()
    stored = await _stream_events(nats_url, topology)
    request_id = raw.headers["x-nexus-request-id"]
    mine = [(e, mid) for e, mid in stored if e.request_id == request_id]
    assert [type(e).__name__ for e, _ in mine] == [
        "RequestReceived",
        "UpstreamResult",
        "UsageRecorded",
        "RequestCompleted",
    ]
    assert all(mid == e.id for e, mid in mine)
    assert all(e.tenant.key_id == "k-full" and e.tenant.org_id == "acme" for e, _ in mine)
    usage = mine[2][0]
    assert isinstance(usage, UsageRecorded) and completion.usage is not None
    assert usage.usage.total_tokens == completion.usage.total_tokens
    assert isinstance(mine[3][0], RequestCompleted)


async def test_large_body_is_spilled_with_a_reference(
    nats_url: str, topology: Topology, tmp_path: Path
) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js, topology)
    spill = SpillStore(js, topology.spill_bucket)
    stack = await make_stack(spill=spill, max_body=1024 * 1024)
    try:
        async with openai.AsyncOpenAI(base_url=stack.url, api_key=stack.keys.full, max_retries=0) as c:
            await c.chat.completions.create(
                model="sim-small", messages=[{"role": "user", "content": "x" * 300_000}]
            )
    finally:
        await stack.gateway.close()  # waits for the background spill
        await stack.sim.close()
    try:
        (received,) = [e for e in stack.events.events if isinstance(e, RequestReceived)]
        assert received.body is not None and received.body.inline is None and received.body.ref is not None
        assert received.body.size > 300_000
        data = await spill.get(received.body.ref)
        assert len(data) == received.body.size and b"x" * 1000 in data
    finally:
        await js.delete_object_store(topology.spill_bucket)
        await delete_streams(js, topology)
        await nc.close()
