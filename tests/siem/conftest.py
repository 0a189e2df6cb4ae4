from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NATS

from streams import deadletter
from streams.jetstream import ensure_streams
from streams.topology import Topology


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_url)
    yield client
    await client.close()


@pytest.fixture
async def js(nc: NATS, topology: Topology) -> AsyncIterator[nats.js.JetStreamContext]:
    jsc = nc.jetstream()
    await ensure_streams(jsc, topology)
    yield jsc
    for name in [s.name for s in topology.streams()] + [deadletter.stream_name(topology)]:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await jsc.delete_stream(name)
