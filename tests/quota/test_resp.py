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


async def test_a_stopped_server_fails_waiting_calls_after_the_stall_and_replies_pair_up_after(
    private_valkey: PrivateValkey,
) -> None:
    """SIGSTOP: the socket stays open, nothing comes back.  The calls fail
    after stall_s (not at some distant deadline); once the server resumes,
    the commands it had queued run, and a new call gets its own reply, not
    one meant for a call that gave up."""
    import os
    import signal
    import time

    from ingress.quota.resp import StoreStalled

    url = f"redis://127.0.0.1:{private_valkey.port}/0"
    client = PipelinedValkey(url, stall_s=0.3)
    script = client.register_script(ECHO_INCR)
    assert private_valkey.proc is not None
    try:
        assert (await script(keys=["n"], args=["warm", 1]))[1] == 1
        os.kill(private_valkey.proc.pid, signal.SIGSTOP)
        t = time.monotonic()
        stalled = await asyncio.gather(
            *(script(keys=["n"], args=[f"s{i}", 1]) for i in range(5)), return_exceptions=True
        )
        took = time.monotonic() - t
        assert all(isinstance(r, StoreStalled) for r in stalled), stalled
        assert 0.25 <= took < 2.0
        os.kill(private_valkey.proc.pid, signal.SIGCONT)
        after = await script(keys=["n"], args=["after", 1])
        assert after[0] == b"after" and after[1] == 7  # the 5 given up on ran first, in order
    finally:
        os.kill(private_valkey.proc.pid, signal.SIGCONT)
        await client.aclose()


async def test_answers_waiting_unread_are_not_taken_for_a_stalled_server(
    valkey_url: str, valkey_prefix: str
) -> None:
    """The server answered, but this process has not read the socket yet (a
    busy loop, or a long callback just before the watchdog's turn: on uvloop
    timers run before the sockets are read).  Reading is paused here to hold
    the replies in the socket past stall_s: the watchdog sees the bytes
    waiting and fails no one."""
    import uvloop

    key = f"{valkey_prefix}resp:{uuid.uuid4().hex}"

    async def unread_past_the_stall() -> list[bytes]:
        client = PipelinedValkey.from_url(valkey_url)
        client.stall_s = 0.1
        script = client.register_script(ECHO_INCR)
        try:
            await script(keys=[key], args=["warm", 1])
            transport = client._proto.transport if client._proto is not None else None
            assert transport is not None
            transport.pause_reading()
            calls = [asyncio.ensure_future(script(keys=[key], args=[f"c{i}", 1])) for i in range(20)]
            await asyncio.sleep(0.5)  # five watchdog turns with the replies unread
            assert not any(c.done() for c in calls)
            transport.resume_reading()
            return [r[0] for r in await asyncio.gather(*calls)]
        finally:
            await client.aclose()

    expected = [f"c{i}".encode() for i in range(20)]
    try:
        assert await asyncio.to_thread(uvloop.run, unread_past_the_stall()) == expected
        assert await unread_past_the_stall() == expected
    finally:
        check = valkey.Valkey.from_url(valkey_url)
        await check.delete(key)
        await check.aclose()
