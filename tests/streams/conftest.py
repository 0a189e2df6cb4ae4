from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from streams import deadletter
from streams.jetstream import connect, delete_streams, ensure_streams
from streams.topology import Topology


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    client = await connect(nats_url, name="streams-tests")
    yield client
    await client.close()


@pytest.fixture
async def js(nc: NATS, topology: Topology) -> AsyncIterator[JetStreamContext]:
    ctx = nc.jetstream()
    await ensure_streams(ctx, topology)
    yield ctx
    await delete_streams(ctx, topology)
    with contextlib.suppress(NotFoundError):
        await ctx.delete_stream(deadletter.stream_name(topology))
