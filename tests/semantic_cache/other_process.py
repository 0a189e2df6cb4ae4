"""Another gateway node's semantic cache, in its own process: reads
commands on stdin (``fill <text>``, ``lookup <text>``, ``poison <id>``),
answers one JSON line each.  Only Valkey is shared with the test."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import valkey.asyncio as avalkey

from ingress.cache.semantic import MiniLMEmbedder, SemanticCache
from ingress.cache.store import Entry


async def main(url: str, prefix: str) -> None:
    client = avalkey.from_url(url)  # type: ignore[no-untyped-call]
    cache = SemanticCache(client, prefix, MiniLMEmbedder(), threshold=0.93, ttl_s=300, embed_timeout_s=5.0)
    await cache.start()
    loop = asyncio.get_running_loop()
    print(json.dumps({"ready": True}), flush=True)
    while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
        op, _, arg = line.partition(" ")
        if op == "fill":
            probe = await cache.lookup("p", "key:k-1", arg)
            eid = await cache.fill(
                probe, Entry(kind="response", content_type="text/plain", body=arg.encode())
            )
            out: dict[str, object] = {"id": eid}
        elif op == "lookup":
            probe = await cache.lookup("p", "key:k-1", arg)
            out = {"hit": probe.hit.entry.body.decode() if probe.hit else None, "indexed": len(cache.index)}
        else:
            out = {"evicted": await cache.poison(arg)}
        print(json.dumps(out), flush=True)
    await cache.close()
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
