"""Benchmark: what the response guard adds to a stream's first token.

    python tests/benchmarks/stream_ttft.py [--requests 60]

Two gateways in this process in front of one simulated provider: one with
the demo config's hooks (the response-stage secret-leak pack reading every
stream in chunked mode, the request-stage PII and packs), one with no hooks.
Requests alternate between them, so machine noise hits both alike.  The
caller's time to first token (the first SSE event carrying text, read by a
plain HTTP client) is compared, for two kinds of stream:

- the harness's realistic provider: 20 ms before the headers, 200 ms to the
  first token, then 100 tokens/s (``run.py --upstreams realistic``);
- short tokens at 50 per second, no extra first-token delay: the case where
  a guard that waits for a window of text shows most (a window of 256
  characters is over a second of such a stream).

Prints, per kind: TTFT p50/p90 with the guard and without, and the added
p50 (the issue's target: at most 5 ms for both).  Also how many text
deltas the caller received per stream (a guard that batches text into
windows shows fewer).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ingress.gateway import create_app, start_gateway
from nexus.sim import SimSettings, start_sim
from streams.config_snapshot import ConfigSnapshot, resolve_secret
from streams.config_validation import parse_config
from streams.events import Event

DEMO = Path(__file__).resolve().parents[2] / "nexus" / "demo" / "config.yaml"
DEMO_KEY = "nvk_ebb5cfb0b7432f688ccfefffa828d8f98b8d20dbabf18acfd8666afdf0b46f7b"

# name -> the simulated provider's behaviour, as x-sim-* headers (they are
# the provider's, not the gateway's: the gateway forwards none of them, so
# they go on the sim's settings through a per-kind sim).
KINDS: dict[str, SimSettings] = {
    "realistic (20 ms + 200 ms TTFT, 100 tok/s)": SimSettings(latency_ms=20, ttft_ms=200, tokens_per_s=100),
    "short tokens at 50/s": SimSettings(tokens_per_s=50),
}


class NullSink:
    def emit(self, event: Event) -> None:
        return None


def _snapshot(sim_url: str, hooks: bool) -> ConfigSnapshot:
    cfg = parse_config(DEMO.read_bytes())
    provider = msgspec.structs.replace(cfg.providers[0], base_url=sim_url)
    changes: dict[str, Any] = {"providers": (provider,), "quotas": type(cfg.quotas)()}
    if not hooks:
        changes["hooks"] = msgspec.structs.replace(cfg.hooks, pipeline=())
    gateway = msgspec.structs.replace(cfg.gateway, shed_loop_lag_ms=0)
    changes["gateway"] = gateway
    return ConfigSnapshot(msgspec.structs.replace(cfg, **changes), resolve_secret(cfg, {}))


async def _ttft(session: aiohttp.ClientSession, url: str, n: int) -> tuple[float, int]:
    """Milliseconds to the first text delta, and how many text deltas came."""
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"Tell me about the fleet, part {n}."}],
        "stream": True,
    }
    t0 = time.perf_counter()
    first = 0.0
    deltas = 0
    buf = b""
    async with session.post(url, json=body, headers={"Authorization": f"Bearer {DEMO_KEY}"}) as resp:
        if resp.status != 200:
            raise RuntimeError(f"status {resp.status}: {(await resp.read())[:200]!r}")
        async for data in resp.content.iter_any():
            buf += data
            *events, buf = buf.split(b"\n\n")
            for ev in events:
                if b'"content":"' in ev and b'"content":""' not in ev:
                    deltas += 1
                    if not first:
                        first = (time.perf_counter() - t0) * 1000
    return first, deltas


def _p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=60, help="streams per gateway and kind")
    args = ap.parse_args()
    head = f"{'guard p50':>10} {'p90':>8} {'none p50':>10} {'p90':>8} {'added p50':>10}  deltas"
    print(f"{'stream kind':44} {head}")
    for kind, settings in KINDS.items():
        sim = await start_sim(settings)
        guarded = await start_gateway(create_app(_snapshot(sim.url, True), NullSink(), env={}))
        plain = await start_gateway(create_app(_snapshot(sim.url, False), NullSink(), env={}))
        times: dict[str, list[float]] = {"guard": [], "none": []}
        counts: dict[str, list[int]] = {"guard": [], "none": []}
        try:
            async with aiohttp.ClientSession() as session:
                for n in range(args.requests + 3):
                    for name, gw in (("guard", guarded), ("none", plain)):
                        ms, deltas = await _ttft(session, gw.url + "/chat/completions", n)
                        if n >= 3:  # warm-up
                            times[name].append(ms)
                            counts[name].append(deltas)
        finally:
            await guarded.close()
            await plain.close()
            await sim.close()
        g, p = times["guard"], times["none"]
        added = statistics.median(g) - statistics.median(p)
        print(
            f"{kind:44} {statistics.median(g):8.1f}ms {_p(g, 90):6.1f}ms "
            f"{statistics.median(p):8.1f}ms {_p(p, 90):6.1f}ms {added:+9.1f}ms  "
            f"{statistics.median(counts['guard']):.0f} vs {statistics.median(counts['none']):.0f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
