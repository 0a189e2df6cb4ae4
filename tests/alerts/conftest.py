from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from processors.alerts import dedup
from streams import deadletter
from streams.jetstream import connect, ensure_streams
from streams.topology import Topology
from tests.alerts.receivers import HttpReceiver


@pytest.fixture
async def js(nats_url: str, topology: Topology) -> AsyncIterator[JetStreamContext]:
    nc: NATS = await connect(nats_url, name="alerts-test")
    ctx = nc.jetstream()
    await ensure_streams(ctx, topology)
    await deadletter.ensure_stream(ctx, topology)
    yield ctx
    names = [s.name for s in topology.streams()] + [deadletter.stream_name(topology)]
    for name in names:
        with contextlib.suppress(Exception):
            await ctx.delete_stream(name)
    for bucket in (dedup.bucket_name(topology), topology.heartbeat_bucket, topology.fleet_sync_bucket):
        with contextlib.suppress(Exception):
            await ctx.delete_key_value(bucket)
    await nc.close()


@pytest.fixture
async def webhook() -> AsyncIterator[HttpReceiver]:
    r = await HttpReceiver("webhook", secret=b"s3cret-signing-key").start()
    yield r
    await r.stop()
