"""streams.kv_scan: every live entry of a KV bucket, exactly, on a real NATS."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS
from nats.js.api import KeyValueConfig
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from streams.kv_scan import scan
from streams.tasks import stop_tasks
from streams.topology import Topology

pytestmark = pytest.mark.integration


@pytest.fixture
async def bucket(nc: NATS, topology: Topology) -> AsyncIterator[tuple[str, KeyValue]]:
    js = nc.jetstream()
    name = f"{topology.prefix}_SCAN"
    kv = await js.create_key_value(KeyValueConfig(bucket=name, history=3))
    yield name, kv
    with contextlib.suppress(NotFoundError):
        await js.delete_key_value(name)


async def _consumers(nc: NATS, name: str) -> int:
    return (await nc.jetstream().stream_info(f"KV_{name}")).state.consumer_count


async def test_live_entries_only_with_their_latest_values(nc: NATS, bucket: tuple[str, KeyValue]) -> None:
    name, kv = bucket
    js = nc.jetstream()
    assert await scan(js, name) == []
    for i in range(600):  # more than one fetch batch
        await kv.put(f"a.{i}", b"v1")
    await kv.put("a.7", b"v2")
    await kv.delete("a.8")
    await kv.purge("a.9")
    await kv.put("b.1", b"other")
    items = await scan(js, name)
    keys = [i.key for i in items]
    assert len(keys) == len(set(keys)) == 599
    assert "a.8" not in keys and "a.9" not in keys
    by_key = {i.key: i for i in items}
    assert by_key["a.7"].value == b"v2"
    assert by_key["a.7"].revision == (await kv.get("a.7")).revision
    assert [i.key for i in await scan(js, name, prefix="b.")] == ["b.1"]
    assert await _consumers(nc, name) == 0, "a scan leaves its consumer behind"


async def test_a_key_written_just_before_is_always_there(nc: NATS, bucket: tuple[str, KeyValue]) -> None:
    """The race nats-py's keys() has (an end marker before entries already
    pushed): write, then scan at once, many times over, with other writes
    going on."""
    name, kv = bucket
    js = nc.jetstream()

    async def churn() -> None:
        i = 0
        while True:
            await kv.put(f"noise.{i % 50}", b"x")
            i += 1

    noise = asyncio.create_task(churn())
    try:
        for i in range(40):  # each a consumer made, read and deleted: keep it light on a loaded machine
            await kv.put(f"k.{i}", b"v")
            keys = {item.key for item in await scan(js, name, prefix="k.")}
            assert keys == {f"k.{j}" for j in range(i + 1)}, i
    finally:
        # (not cancel-and-await: a cancel that lands with a put's ack is lost
        # on 3.11 and the churn went on for the test's whole timeout; see
        # streams.tasks)
        await stop_tasks(noise)


async def test_an_absent_bucket_has_no_entries(nc: NATS, topology: Topology) -> None:
    assert await scan(nc.jetstream(), f"{topology.prefix}_NONE") == []
