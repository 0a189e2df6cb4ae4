"""A FastStream event worker built on ``streams.faststream_app.make_broker``
against the real JetStream: the handler gets typed events; poison goes to
the dead-letter subject under the worker's name and never reaches it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from faststream.nats import JStream, PullSub
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from streams import codec, deadletter
from streams.events import RequestFailed, Tenant
from streams.faststream_app import make_broker
from streams.jetstream import connect, ensure_streams
from streams.topology import Topology

pytestmark = pytest.mark.integration


@pytest.fixture
async def js(nats_url: str, topology: Topology) -> AsyncIterator[JetStreamContext]:
    nc: NATS = await connect(nats_url, name="faststream-worker-test")
    ctx = nc.jetstream()
    await ensure_streams(ctx, topology)
    yield ctx
    for name in [s.name for s in topology.streams()] + [deadletter.stream_name(topology)]:
        with contextlib.suppress(Exception):
            await ctx.delete_stream(name)
    await nc.close()


async def test_a_faststream_worker_gets_typed_events_and_poison_is_dead_lettered(
    js: JetStreamContext, topology: Topology, nats_url: str
) -> None:
    await deadletter.ensure_stream(js, topology)
    broker = make_broker(nats_url, topology=topology, identity="alerts")
    got: list[RequestFailed] = []

    @broker.subscriber(
        topology.traffic_subject("request.failed"),
        stream=JStream(topology.traffic_stream, declare=False),
        durable="alerts",
        pull_sub=PullSub(batch_size=10, timeout=0.2),
    )
    async def on_failure(event: RequestFailed) -> None:  # a thin handler on the typed event
        got.append(event)

    failure = RequestFailed(request_id="r1", status=502, tenant=Tenant(org_id="acme"))
    subject = topology.traffic_subject("request.failed")
    await js.publish(subject, b"{not an event", headers={"Nats-Msg-Id": "poison-1"})
    await js.publish(subject, codec.encode(failure), headers={"Nats-Msg-Id": failure.id})
    await broker.start()
    try:
        async with asyncio.timeout(15):
            while not got:
                await asyncio.sleep(0.05)
            while not await deadletter.entries(js, topology, consumer="alerts"):
                await asyncio.sleep(0.05)
    finally:
        await broker.stop()
    assert got == [failure] and isinstance(got[0], RequestFailed)
    [dl] = await deadletter.entries(js, topology, consumer="alerts")
    assert dl.code == "undecodable" and dl.data == b"{not an event" and dl.subject == subject
