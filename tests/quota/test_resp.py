"""The quota gate's pipelined Valkey connection against real servers:
replies matched to callers under concurrency, a flushed script cache,
error replies, auth and database from the URL, a server that goes away
and comes back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import valkey.asyncio as valkey

from ingress.quota.resp import PipelinedValkey, ReplyError
from tests.services import PrivateValkey

pytestmark = pytest.mark.integration

ECHO_INCR = """
local n = redis.call('INCRBY', KEYS[1], tonumber(ARGV[2]))
return {ARGV[1], n}
"""


@pytest.fixture
def private_valkey() -> Iterator[PrivateValkey]:
    server = PrivateValkey()
    server.start()
    yield server
    server.stop()


async def test_concurrent_calls_each_get_their_own_reply(valkey_url: str, valkey_prefix: str) -> None:
    client = PipelinedValkey.from_url(valkey_url)
    script = client.register_script(ECHO_INCR)
    key = f"{valkey_prefix}resp:{uuid.uuid4().hex}"
    try:
        replies = await asyncio.gather(*(script(keys=[key], args=[f"call-{i}", i]) for i in range(500)))
        assert [r[0] for r in replies] == [f"call-{i}".encode() for i in range(500)]
        # Every INCRBY ran once, in the order the calls were made.
        totals = [r[1] for r in replies]
        assert totals == sorted(totals) and totals[-1] == sum(range(500))
    finally:
        await client.aclose()
        check = valkey.Valkey.from_url(valkey_url)
        await check.delete(key)
        await check.aclose()


async def test_a_flushed_script_cache_is_reloaded_and_errors_are_raised(
    private_valkey: PrivateValkey,
) -> None:
    url = f"redis://127.0.0.1:{private_valkey.port}/0"
    client = PipelinedValkey.from_url(url)
    script = client.register_script(ECHO_INCR)
    admin = valkey.Valkey.from_url(url)
    try:
        assert (await script(keys=["k"], args=["a", 1]))[1] == 1
        await admin.script_flush()
        assert (await script(keys=["k"], args=["b", 2]))[1] == 3  # NOSCRIPT -> EVAL
        broken = client.register_script("return redis.call('INCRBY', KEYS[1], 'not-a-number')")
        with pytest.raises(ReplyError):
            await broken(keys=["k"])
        assert (await script(keys=["k"], args=["c", 1]))[1] == 4  # the connection is still in step
    finally:
        await client.aclose()
        await admin.aclose()


async def test_password_and_database_come_from_the_url(tmp_path: Path) -> None:
    server = PrivateValkey("--requirepass", "s3cret")
    server.start()
    try:
        good = PipelinedValkey.from_url(f"redis://:s3cret@127.0.0.1:{server.port}/3")
        assert (await good.register_script(ECHO_INCR)(keys=["k"], args=["x", 5]))[1] == 5
        await good.aclose()
        admin = valkey.Valkey.from_url(f"redis://:s3cret@127.0.0.1:{server.port}/3")
        assert await admin.get("k") == b"5"  # written in database 3
        await admin.aclose()
        bad = PipelinedValkey.from_url(f"redis://:wrong@127.0.0.1:{server.port}/0")
        with pytest.raises(ConnectionError):
            await bad.register_script(ECHO_INCR)(keys=["k"], args=["x", 1])
    finally:
        server.stop()


async def test_calls_fail_while_the_server_is_away_and_work_once_it_is_back() -> None:
    server = PrivateValkey()
    server.start()
    url = f"redis://127.0.0.1:{server.port}/0"
    client = PipelinedValkey.from_url(url)
    script = client.register_script(ECHO_INCR)
    try:
        assert (await script(keys=["k"], args=["a", 1]))[1] == 1
        server.stop()
        with pytest.raises(ConnectionError):
            await asyncio.gather(*(script(keys=["k"], args=["b", 1]) for _ in range(5)))
        server.start()  # same port, empty (no persistence)
        assert (await script(keys=["k"], args=["c", 1]))[1] == 1
    finally:
        await client.aclose()
        server.stop()
