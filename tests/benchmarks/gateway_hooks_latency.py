"""Benchmark: what the compliance pipeline adds to a request at the gateway.

    python tests/benchmarks/gateway_hooks_latency.py [--requests 400] [--prompt-bytes 4096]

Two gateways in this process in front of one simulated provider (no
simulated latency): one with the demo config's hook pipeline (PII
redaction of cards/secrets, the prompt-injection and secret-leak packs on
requests, secret-leak on responses, chunked stream guard), one with no
hooks.  Requests alternate between them (same prompt shape, a counter makes
every text different) so machine noise hits both alike; the difference of
the client-side latencies is the pipeline's cost as a caller sees it:
request stage, redaction, response stage or stream guard, the extra events.

Prints p50/p99 per gateway and the added p50, unary and streamed, for a
clean prompt and one carrying a card number (found and redacted).
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
from streams.events_compliance import StageDecision

DEMO = Path(__file__).resolve().parents[2] / "nexus" / "demo" / "config.yaml"
DEMO_KEY = "nvk_ebb5cfb0b7432f688ccfefffa828d8f98b8d20dbabf18acfd8666afdf0b46f7b"


class NullSink:
    """Events go nowhere, except the hook time each stage reports (the
    engine's own share of the added latency, immune to client noise)."""

    def __init__(self) -> None:
        self.hooks_us: dict[str, list[int]] = {}

    def emit(self, event: Event) -> None:
        if isinstance(event, StageDecision):
            self.hooks_us.setdefault(event.stage, []).append(event.hooks_us)


def _snapshot(sim_url: str, hooks: bool) -> ConfigSnapshot:
    cfg = parse_config(DEMO.read_bytes())
    provider = msgspec.structs.replace(cfg.providers[0], base_url=sim_url)
    # Quotas would need Valkey and are not what is measured here.
    changes: dict[str, Any] = {"providers": (provider,), "quotas": type(cfg.quotas)()}
    if not hooks:
        changes["hooks"] = msgspec.structs.replace(cfg.hooks, pipeline=())
    return ConfigSnapshot(msgspec.structs.replace(cfg, **changes), resolve_secret(cfg, {}))


def _prompt(size: int, n: int, card: bool) -> str:
    filler = "Please summarise the quarterly report for the operations team. "
    text = (filler * (size // len(filler) + 1))[: size - 64]
    if card:
        text += " Charge card 4111 1111 1111 1111."
    return f"{text} (request {n})"


async def _one(session: aiohttp.ClientSession, url: str, prompt: str, stream: bool) -> float:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}], "stream": stream}
    t0 = time.perf_counter()
    async with session.post(url, json=body, headers={"Authorization": f"Bearer {DEMO_KEY}"}) as resp:
        data = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"status {resp.status}: {data[:200]!r}")
    return (time.perf_counter() - t0) * 1000


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--prompt-bytes", type=int, default=4096)
    args = ap.parse_args()

    sim = await start_sim(SimSettings())
    built = time.perf_counter()
    sink = NullSink()
    gw_hooks = await start_gateway(create_app(_snapshot(sim.url, True), sink, env={}))
    build_s = time.perf_counter() - built
    gw_plain = await start_gateway(create_app(_snapshot(sim.url, False), NullSink(), env={}))
    print(f"gateway start-up with the demo pipeline: {build_s:.2f} s (engine build included)")
    try:
        async with aiohttp.ClientSession() as session:
            for stream in (False, True):
                for card in (False, True):
                    times: dict[str, list[float]] = {"hooks": [], "plain": []}
                    for n in range(args.requests + 20):
                        prompt = _prompt(args.prompt_bytes, n, card)
                        for name, gw in (("hooks", gw_hooks), ("plain", gw_plain)):
                            ms = await _one(session, gw.url + "/chat/completions", prompt, stream)
                            if n >= 20:  # warm-up
                                times[name].append(ms)
                    h, p = times["hooks"], times["plain"]
                    stages = {k: statistics.median(v) for k, v in sink.hooks_us.items()}
                    sink.hooks_us.clear()
                    label = f"{'stream' if stream else 'unary '} {'card ' if card else 'clean'}"
                    print(
                        f"{label}: hooks p50 {statistics.median(h):6.2f} ms p99 {_pct(h, 99):6.2f} | "
                        f"no hooks p50 {statistics.median(p):6.2f} ms p99 {_pct(p, 99):6.2f} | "
                        f"added p50 {statistics.median(h) - statistics.median(p):+.2f} ms | "
                        "engine p50 " + ", ".join(f"{k} {v / 1000:.3f} ms" for k, v in sorted(stages.items()))
                    )
    finally:
        await gw_hooks.close()
        await gw_plain.close()
        await sim.close()


if __name__ == "__main__":
    asyncio.run(main())
