"""Two gateway processes share the semantic cache through Valkey only: an
answer one stores is found by the other, and an eviction by one holds in
the other at once."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from ingress.cache.semantic import Embedder
from ingress.cache.store import Entry
from tests.semantic_cache.conftest import make_cache

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRIPT = Path(__file__).with_name("other_process.py")


class Other:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def ask(self, line: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        reply: dict[str, Any] = json.loads(await asyncio.wait_for(self.proc.stdout.readline(), 30))
        return reply


async def until(check: Any) -> Any:
    for _ in range(300):
        got = await check()
        if got:
            return got
        await asyncio.sleep(0.02)
    raise AssertionError("never happened")


async def test_fill_and_poison_hold_across_processes(
    embedder: Embedder, valkey_client: Any, valkey_url: str, valkey_prefix: str
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPT), valkey_url, valkey_prefix, stdin=-1, stdout=-1
    )
    other = Other(proc)
    here = make_cache(valkey_client, valkey_prefix, embedder)
    await here.start()
    try:
        assert proc.stdout is not None
        assert json.loads(await asyncio.wait_for(proc.stdout.readline(), 60)) == {"ready": True}

        # the other process answers; this one finds it by a paraphrase
        filled = await other.ask("fill How do I undo the last git commit?")
        assert filled["id"]

        async def hit_here() -> Any:
            return (await here.lookup("p", "key:k-1", "How can I undo my last commit in git?")).hit

        hit = await until(hit_here)
        assert hit.entry.body == b"How do I undo the last git commit?"

        # this one answers; the other process finds it
        probe = await here.lookup("p", "key:k-1", "Who painted the Mona Lisa?")
        painted = await here.fill(probe, Entry(kind="response", content_type="text/plain", body=b"Leonardo"))

        async def hit_there() -> Any:
            reply = await other.ask("lookup Who was the painter of the Mona Lisa?")
            return reply if reply["hit"] else None

        assert (await until(hit_there))["hit"] == "Leonardo"

        # this one poisons it: the other process never serves it again, at once
        assert await here.poison(painted or "")
        reply = await other.ask("lookup Who was the painter of the Mona Lisa?")
        assert reply["hit"] is None
        # and the other's poison holds here
        assert (await other.ask(f"poison {filled['id']}"))["evicted"] is True
        assert await hit_here() is None
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        await asyncio.wait_for(proc.wait(), 30)
        await here.close()
