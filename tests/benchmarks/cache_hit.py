"""Exact-cache hit latency (a script, not a pytest test).

Starts a zero-delay simulated provider and two gateways in-process (one
with the exact cache on a real Valkey, one without), sends the same
request sequentially and prints p50/p99 of:

- ``healthz``: the gateway's no-op path (middleware only),
- ``no-cache``: a full call through the gateway to the zero-delay sim,
- ``hit``: the same call answered from the cache,
- ``valkey GET``: one bare round trip for an entry of the same size,

and the hit's added latency over the no-op path.

    python tests/benchmarks/cache_hit.py --requests 2000 [--stream]

NEXUS_VALKEY_URL (default redis://127.0.0.1:6379/0); keys go under a
throwaway prefix, deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from ingress.gateway import create_app, start_gateway  # noqa: E402
from nexus.sim import SimSettings, start_sim  # noqa: E402
from streams.config_snapshot import ConfigSnapshot  # noqa: E402
from streams.config_validation import parse_config  # noqa: E402
from streams.keys import hash_key, new_key  # noqa: E402

SECRET = b"bench-secret-0123456789abcdef"


class Sink:
    def emit(self, event: object) -> None:
        pass


def config(sim_url: str, key: str, cache: bool) -> bytes:
    return msgspec.yaml.encode(
        {
            "orgs": [{"id": "o"}],
            "projects": [{"id": "p", "org": "o"}],
            "virtual_keys": [{"id": "k", "hash": hash_key(key, SECRET), "org": "o", "project": "p"}],
            "providers": [{"name": "sim", "base_url": sim_url, "allow_private_network": True}],
            "models": [{"name": "bench", "provider": "sim", "price": {"input": 1, "output": 2}}],
            "cache": {"enabled": cache},
        }
    )


def pct(xs: list[float], p: float) -> float:
    return statistics.quantiles(xs, n=100)[int(p) - 1] if len(xs) > 1 else xs[0]


async def timed(n: int, go: Any) -> list[float]:
    out: list[float] = []
    for _ in range(n):
        t = time.perf_counter()
        await go()
        out.append((time.perf_counter() - t) * 1000)
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--stream", action="store_true")
    args = ap.parse_args()
    import valkey.asyncio as avalkey

    url = os.environ.get("NEXUS_VALKEY_URL", "redis://127.0.0.1:6379/0")
    prefix = f"bench:{secrets.token_hex(4)}:"
    client = avalkey.from_url(url)  # type: ignore[no-untyped-call]
    sim = await start_sim(SimSettings())
    key = new_key()
    gws = {}
    for name, on in (("cache", True), ("plain", False)):
        snap = ConfigSnapshot(parse_config(config(sim.url, key, on)), SECRET)
        app = create_app(snap, Sink(), valkey=client, valkey_prefix=prefix)
        gws[name] = await start_gateway(app)
    body: dict[str, Any] = {
        "model": "bench",
        "messages": [{"role": "user", "content": "Cache me if you can."}],
    }
    if args.stream:
        body["stream"] = True
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(headers=headers) as http:

        async def call(base: str, expect: str | None = None) -> None:
            async with http.post(base + "/chat/completions", json=body) as r:
                await r.read()
                assert r.status == 200, r.status
                if expect is not None:
                    assert r.headers.get("X-Nexus-Cache") == expect, r.headers.get("X-Nexus-Cache")

        async def healthz() -> None:
            async with http.get(gws["plain"].url.removesuffix("/v1") + "/healthz") as r:
                await r.read()

        await call(gws["cache"].url, "MISS")
        await asyncio.sleep(0.2)  # the fill is written in the background
        for _ in range(100):  # warm up every path
            await call(gws["cache"].url, "HIT")
            await call(gws["plain"].url)
            await healthz()
        n = args.requests
        noop = await timed(n, healthz)
        plain = await timed(n, lambda: call(gws["plain"].url))
        hit = await timed(n, lambda: call(gws["cache"].url, "HIT"))
        keys = [k async for k in client.scan_iter(match=prefix + "cache:exact:*")]
        raw = await client.get(keys[0])
        get = await timed(n, lambda: client.get(keys[0]))
    kind = "stream" if args.stream else "unary"
    print(f"exact cache, {kind}, {n} sequential requests, entry {len(raw)} bytes")
    for label, xs in (
        ("healthz (no-op)", noop),
        ("no-cache (sim 0 ms)", plain),
        ("cache hit", hit),
        ("valkey GET", get),
    ):
        print(f"  {label:22s} p50 {pct(xs, 50):7.3f} ms   p99 {pct(xs, 99):7.3f} ms")
    print(f"  hit added over the no-op path: p50 {pct(hit, 50) - pct(noop, 50):.3f} ms")
    print(f"  hit vs the uncached call:      p50 {pct(hit, 50) - pct(plain, 50):+.3f} ms")
    for gw in gws.values():
        await gw.close()
    await sim.close()
    for k in keys:
        await client.delete(k)
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
