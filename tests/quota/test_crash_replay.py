"""kill -9 the quota processor mid-run, restart it: the counters equal the
sum of the usage events; and again after ``nexus replay quotas``."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from streams.jetstream import connect, ensure_streams
from streams.quota_counters import QuotaPolicy
from streams.topology import Topology
from tests.quota.helpers import BASE, config, publish, usage_event

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
QUOTAS = """
quotas:
  budgets:
    - {id: key-month, unit: usd, limit: 1000, window: month, per: [key]}
    - {id: big-day, unit: tokens, limit: 100000000, window: day, match: {model: big}}
    - {id: org-24h, unit: usd, limit: 1000, window: 24h, per: [org]}
    - {id: acme-week, unit: usd, limit: 1000, window: week, match: {org: acme}, alert_at: [0.5]}
  rate_limits:
    - {id: rl, per: [project], rpm: 100000000, tpm: 1000000000}
"""
TENANTS = [("k1", "acme", "web", "alice"), ("k2", "acme-eu", "eu-app", ""), ("k3", "other", "misc", "")]


def spawn(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "processors.quota", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def wait_running(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = await asyncio.to_thread(proc.stdout.readline)
    assert "quota processor running" in line, line


async def actual(vk: Any, key: str) -> int:
    if ":q:r:" in key:
        v = await vk.hget(key, "sum")
    else:
        v = await vk.get(key)
    return int(v) if v else 0


async def test_kill_9_mid_run_then_restart_then_replay(
    tmp_path: Path, nats_url: str, valkey_url: str, valkey_prefix: str, topology: Topology, vk: Any
) -> None:
    cfg_path = tmp_path / "nexus.yaml"
    cfg_path.write_text(BASE + QUOTAS)
    cfg = config(QUOTAS)
    policy = QuotaPolicy(cfg, valkey_prefix)
    args = [
        "--config", str(cfg_path), "--nats", nats_url, "--valkey", valkey_url,
        "--stream-prefix", topology.prefix, "--key-prefix", valkey_prefix,
    ]  # fmt: skip
    nc = await connect(nats_url, name="quota-crash-test")
    js = nc.jetstream()
    await ensure_streams(js, topology)
    r = random.Random(11)
    events = []
    for i in range(3000):
        key, org, project, user = r.choice(TENANTS)
        events.append(
            usage_event(
                request_id=f"c{i}",
                key=key,
                org=org,
                project=project,
                user=user,
                model=r.choice(["big", "small"]),
                prompt=r.randrange(1, 2000),
                completion=r.randrange(0, 1000),
                cfg=cfg,
            )
        )
    proc = spawn(args)
    try:
        await wait_running(proc)

        async def produce() -> None:
            for start in range(0, len(events), 20):
                sends = []
                for i in range(start, start + 20):
                    sends.append(publish(js, topology, events[i]))
                    if i % 10 == 9:
                        # 10 % are published twice (an outbox re-drain past the
                        # duplicate window): stored twice, must count once.
                        sends.append(publish(js, topology, events[i - 5], msg_id=f"again-{i}"))
                await asyncio.gather(*sends)
                await asyncio.sleep(0.002)

        producer = asyncio.create_task(produce())
        # Kill -9 once the processor is well into the run.
        while int(await vk.get(policy.keys.position) or 0) < 1000:
            await asyncio.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        killed_at = int(await vk.get(policy.keys.position) or 0)
        await asyncio.sleep(0.3)  # events keep arriving while it is down
        proc = spawn(args)
        await wait_running(proc)
        await producer
        info = await js.stream_info(topology.traffic_stream)
        for _ in range(3000):
            cinfo = await js.consumer_info(topology.traffic_stream, "quota")
            if cinfo.num_pending == 0 and cinfo.num_ack_pending == 0:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError(f"the restarted processor did not catch up: {cinfo}")
        assert killed_at < info.state.last_seq  # the kill really was mid-run

        expected: dict[str, int] = defaultdict(int)
        for ev in events:
            from processors.quota.settle import plan

            for op in plan(policy, ev, 0, ev.occurred_at_ms).ops:
                expected[op.k] += op.a
        assert len(expected) > 10

        async def check(stage: str) -> None:
            got = {k: await actual(vk, k) for k in expected}
            wrong = {k: (got[k], v) for k, v in expected.items() if got[k] != v}
            print(f"\n{stage}: {len(expected)} counters, {len(wrong)} differ from the sum of usage events")
            assert not wrong

        print(
            f"\nkilled at position {killed_at} of {info.state.last_seq} messages; "
            f"redelivered after restart: {cinfo.num_redelivered}"
        )
        await check("after kill -9 and restart")
        assert int(await vk.get(policy.keys.position) or 0) == info.state.last_seq

        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        # Damage the counters: a replay must rebuild them from the stream alone.
        some = sorted(expected)[:3]
        for k in some:
            await vk.delete(k)
        replay = subprocess.run(
            [sys.executable, "-m", "nexus.cli", "replay-quotas", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert replay.returncode == 0, replay.stderr
        print(replay.stdout.strip())
        assert "3300 usage events" in replay.stdout
        await check("after nexus replay quotas")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await nc.close()
