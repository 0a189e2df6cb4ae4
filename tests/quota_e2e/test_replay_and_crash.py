"""Counters equal the usage events the gateway published: after
``nexus replay quotas`` and after the quota processor is killed -9 in the
middle of a run and started again."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from typing import Any

import nats
import pytest

from streams.events import UsageRecorded
from streams.quota_counters import usd_to_nano
from tests.quota_e2e.conftest import QuotaStack
from tests.quota_e2e.helpers import Collector, burst_of, limit, sdk, settled, usage_of

pytestmark = pytest.mark.integration


def _cli(stack: QuotaStack, nats_url: str, valkey_url: str, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "nexus.cli",
        *args,
        "--config",
        str(stack.config_path),
        "--nats",
        nats_url,
        "--valkey",
        valkey_url,
        "--stream-prefix",
        stack.topology.prefix,
        "--key-prefix",
        stack.prefix,
    ]


async def _spent(stack: QuotaStack) -> dict[str, float]:
    out = {}
    for key, lim in (("k-cap", "cap"), ("k-tok", "tok"), ("k-soft", "soft")):
        out[lim] = limit(await usage_of(stack, key), lim)["spent"]
    return out


def _sums(events: list[Any]) -> dict[str, float]:
    """What the counters must hold: the sum of the gateway's usage events."""
    usage = [e for e in events if isinstance(e, UsageRecorded)]
    cap = sum(usd_to_nano(e.cost_usd) for e in usage if e.tenant.key_id == "k-cap") / 1e9
    soft = sum(usd_to_nano(e.cost_usd) for e in usage if e.tenant.key_id == "k-soft") / 1e9
    tok = sum(e.usage.total_tokens for e in usage if e.tenant.key_id == "k-tok" and e.model == "gpt-q")
    return {"cap": cap, "soft": soft, "tok": float(tok)}


async def _traffic(stack: QuotaStack, n: int, start: int = 0) -> None:
    for key in ("k-cap", "k-tok", "k-soft"):
        async with sdk(stack, key) as c:
            await burst_of(c, n, model="gpt-q", max_tokens=20, start=start)


async def test_replay_quotas_rebuilds_the_counters_the_gateway_traffic_made(
    qstack: QuotaStack, nats_url: str, valkey_url: str
) -> None:
    events = Collector()
    await events.start(nats_url, qstack.topology.traffic_subject("usage.recorded"))
    try:
        await _traffic(qstack, 20)
        await settled(qstack)
        await asyncio.sleep(0.3)
    finally:
        await events.close()
    live = await _spent(qstack)
    expected = _sums(events.events)
    assert live == pytest.approx(expected, abs=1e-9) and all(v > 0 for v in live.values())

    await qstack.proc.stop()  # replay wants the processor stopped
    await qstack.valkey.delete(*[k async for k in qstack.valkey.scan_iter(match=f"{qstack.prefix}q:*")])
    assert (await _spent(qstack))["cap"] == 0  # the counters are really gone
    done = await asyncio.to_thread(
        subprocess.run,
        _cli(qstack, nats_url, valkey_url, "replay", "quotas"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    print("\n" + done.stdout.strip())
    assert "replayed" in done.stdout
    assert await _spent(qstack) == pytest.approx(live, abs=1e-9)


async def _caught_up(nats_url: str, stack: QuotaStack, timeout_s: float = 30) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            info = await js.consumer_info(stack.topology.traffic_stream, "quota")
            if info.num_pending == 0 and info.num_ack_pending == 0:
                return
            assert asyncio.get_running_loop().time() < deadline, info
            await asyncio.sleep(0.1)
    finally:
        await nc.close()


@pytest.mark.slow  # two processor start-ups in subprocesses and a few hundred requests
async def test_processor_killed_mid_run_resumes_to_exact_counters(
    qstack: QuotaStack, nats_url: str, valkey_url: str
) -> None:
    await qstack.proc.stop()  # the subprocess below takes over the durable consumer
    events = Collector()
    await events.start(nats_url, qstack.topology.traffic_subject("usage.recorded"))
    cmd = _cli(qstack, nats_url, valkey_url, "quota")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = await asyncio.to_thread(proc.stdout.readline)
        assert "quota processor running" in line, line
        traffic = asyncio.create_task(_traffic(qstack, 60))  # k-cap, then k-tok, then k-soft
        # Mid-run: as soon as the processor has settled some of k-cap's events.
        while (await _spent(qstack))["cap"] == 0:
            assert not traffic.done(), "the processor settled nothing"
            await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)
        at_kill = await _spent(qstack)
        await traffic
        assert await qstack.publisher.flush(10)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        assert proc.stdout is not None
        line = await asyncio.to_thread(proc.stdout.readline)
        assert "quota processor running" in line, line
        await _caught_up(nats_url, qstack)
        await asyncio.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 10)
        await events.close()
    after = await _spent(qstack)
    expected = _sums(events.events)
    print(f"\nkilled with {at_kill} settled; after restart: counters {after}, sum of usage events {expected}")
    assert at_kill["cap"] > 0 and at_kill["soft"] < after["soft"]  # killed in the middle of the run
    assert after == pytest.approx(expected, abs=1e-9)
