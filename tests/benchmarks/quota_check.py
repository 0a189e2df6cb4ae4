"""Benchmark: the quota check's added latency per request and the settle lag.

    python tests/benchmarks/quota_check.py [--requests 5000] [--rate 500] [--seconds 5]

Runs against the real Valkey and NATS of this machine (standard loopback
ports), under a throwaway key prefix and stream prefix.  Prints:

* the quota check (estimate + one Lua reservation across 5 counters: org
  USD month, key USD day, model tokens 1h, key RPM and TPM), p50/p99;
* a bare Valkey PING for comparison (the floor of any round trip);
* settle lag: usage event time -> its counters written by the quota
  processor, p50/p99, with events published at a steady rate.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import valkey.asyncio as valkey

from adapters.canonical import ChatRequest, Message
from ingress.quota import QuotaGate
from ingress.quota.resp import PipelinedValkey
from nexus.wiring import quota_valkey
from processors.quota import QuotaProcessor
from streams.jetstream import connect, ensure_streams
from streams.quota_counters import QuotaPolicy
from streams.topology import Topology
from tests.quota.helpers import config, publish, usage_event

QUOTAS = """
quotas:
  budgets:
    - {id: org-month, unit: usd, limit: 1000000, window: month, match: {org: acme}}
    - {id: key-day, unit: usd, limit: 100000, window: day, per: [key]}
    - {id: big-hour, unit: tokens, limit: 1000000000, window: 1h, match: {model: big}}
  rate_limits:
    - {id: per-key, per: [key], rpm: 100000000, tpm: 1000000000}
"""


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


async def bench_check(client: valkey.Valkey, url: str, prefix: str, n: int) -> None:
    cfg = config(QUOTAS)
    # The gateway's own connection for the scripts (ingress.quota.resp);
    # ``client`` (valkey-py) only times the bare PING floor.
    reserve = PipelinedValkey.from_url(url)
    gate = QuotaGate(reserve, QuotaPolicy(cfg, prefix), provider_kinds={"sim": "openai"})
    req = ChatRequest(
        model="big",
        messages=[
            Message(role="system", content="You are a concise assistant for an enterprise help desk."),
            Message(
                role="user",
                content="Summarise our travel policy for contractors in three bullet points. " * 3,
            ),
        ],
        max_tokens=256,
    )
    for _ in range(200):  # warm up: connection, script cache, tokenizer
        await client.ping()
        prompt, out = gate.estimate(req, "big")
        await gate.check(
            request_id=uuid.uuid4().hex,
            org="acme",
            project="web",
            key="k1",
            user="alice",
            model="big",
            prompt_tokens=prompt,
            max_output_tokens=out,
        )
    pings, checks, estimates = [], [], []
    for _ in range(n):
        t0 = time.perf_counter()
        await client.ping()
        t1 = time.perf_counter()
        prompt, out = gate.estimate(req, "big")
        t2 = time.perf_counter()
        d = await gate.check(
            request_id=uuid.uuid4().hex,
            org="acme",
            project="web",
            key="k1",
            user="alice",
            model="big",
            prompt_tokens=prompt,
            max_output_tokens=out,
        )
        t3 = time.perf_counter()
        assert d.admitted and len(d.counters) == 5
        pings.append((t1 - t0) * 1000)
        estimates.append((t2 - t1) * 1000)
        checks.append((t3 - t1) * 1000)
    print(f"quota check (estimate + reserve on 5 counters, one Lua call), {n} requests:")
    print(
        f"  added latency p50 {pct(checks, 50):.3f} ms  p99 {pct(checks, 99):.3f} ms"
        f"  mean {statistics.mean(checks):.3f} ms"
    )
    print(f"  of which estimate (tiktoken) p50 {pct(estimates, 50):.3f} ms")
    print(f"  bare Valkey PING round trip p50 {pct(pings, 50):.3f} ms (the floor)")
    await reserve.aclose()


async def bench_settle(nats_url: str, valkey_url: str, prefix: str, rate: int, seconds: float) -> None:
    cfg = config(QUOTAS)
    topology = Topology(prefix=f"QB{uuid.uuid4().hex[:8]}".upper())
    nc = await connect(nats_url, name="quota-bench")
    js = nc.jetstream()
    await ensure_streams(js, topology)
    proc = QuotaProcessor(cfg, nats_url=nats_url, valkey_url=valkey_url, topology=topology, key_prefix=prefix)
    await proc.start()
    try:
        total = int(rate * seconds)
        interval = 1 / rate
        start = time.perf_counter()
        for i in range(total):
            # Open loop: publish on schedule, whatever the processor does.
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await publish(js, topology, usage_event(request_id=f"s{i}", cfg=cfg))
        assert await proc.wait_until_caught_up(30), "processor did not catch up"
        assert proc.settler is not None
        lags = list(proc.settler.lags_ms)
        print(f"settle lag (usage event -> counters written), {len(lags)} events at {rate}/s:")
        print(
            f"  p50 {pct(lags, 50):.1f} ms  p99 {pct(lags, 99):.1f} ms  max {max(lags):.1f} ms"
            "  (target p99 <= 100 ms)"
        )
    finally:
        await proc.stop()
        await js.delete_stream(topology.traffic_stream)
        await nc.drain()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--valkey", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--nats", default="nats://127.0.0.1:4222")
    args = ap.parse_args()
    prefix = f"nxbench:{uuid.uuid4().hex[:8]}:"
    client = quota_valkey(args.valkey)
    try:
        await bench_check(client, args.valkey, prefix, args.requests)
        await bench_settle(args.nats, args.valkey, prefix, args.rate, args.seconds)
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
