"""A real gateway process killed with SIGKILL in the middle of a stream
(issue 13, item 7): the request's ``traffic_event`` row ends as aborted and
its quota reservation is released, whether the gateway comes back (its
restart is noticed from its heartbeat) or never does (its silence is)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import msgspec
import pytest
import valkey.asyncio as valkey
from nats.aio.client import Client as NATS

from nexus.sim.server import SimSettings, start_sim
from processors.quota import QuotaProcessor
from processors.reconcile import Reconciler, ReconcileSettings
from projections.projector import Projector
from projections.settings import ProjectorSettings
from streams.config_validation import parse_config
from streams.jetstream import connect, ensure_streams
from streams.quota_counters import QuotaKeys
from streams.topology import Topology
from tests.gateway.conftest import SECRET, config_yaml, free_port, make_keys

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def nc(nats_url: str, topology: Topology) -> AsyncIterator[NATS]:
    client = await connect(nats_url, name="reconcile-gateway-test")
    await ensure_streams(client.jetstream(), topology)
    yield client
    js = client.jetstream()
    for name in [s.name for s in topology.streams()] + [f"KV_{topology.heartbeat_bucket}"]:
        with contextlib.suppress(Exception):
            await js.delete_stream(name)
    await client.close()


@pytest.fixture
async def vk(valkey_url: str, valkey_prefix: str) -> AsyncIterator[Any]:
    client = valkey.Valkey.from_url(valkey_url)
    yield client
    keys = [k async for k in client.scan_iter(match=f"{valkey_prefix}*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def _gateway(
    cfg: Path, data: Path, env: dict[str, str], topology: Topology
) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ingress.gateway.cli",
        "--config",
        str(cfg),
        "--data-dir",
        str(data),
        "--stream-prefix",
        topology.prefix,
        "--node-id",
        "gw-killed",
        "--workers",
        "1",
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line, "the gateway exited before it listened"
        if b"listening on" in line:
            break

    async def drain() -> None:
        assert proc.stdout is not None
        while await proc.stdout.readline():
            pass

    asyncio.get_running_loop().create_task(drain())
    return proc


@pytest.mark.parametrize("comes_back", [True, False], ids=["restarted", "never-returns"])
async def test_a_stream_cut_by_a_killed_gateway_is_aborted_and_its_reservation_released(
    comes_back: bool,
    nc: NATS,
    vk: Any,
    nats_url: str,
    valkey_url: str,
    valkey_prefix: str,
    pg_dsn: str,
    topology: Topology,
    tmp_path: Path,
) -> None:
    sim = await start_sim(SimSettings(api_key="sk-sim-test"))
    keys = make_keys()
    port = free_port()
    cfg = msgspec.yaml.decode(config_yaml(sim.port, free_port(), keys))
    cfg["gateway"]["port"] = port
    cfg["gateway"]["request_timeout_s"] = 120
    sim_url = f"http://127.0.0.1:{sim.port}/v1"
    cfg["providers"].append(
        {
            "name": "sim-slow",
            "base_url": sim_url,
            "allow_private_network": True,
            "api_key_env": "SIM_TEST_KEY",
            "headers": {"x-sim-tokens-per-s": "2"},
        }
    )
    cfg["models"].append({"name": "slow", "provider": "sim-slow", "price": {"input": 1.0, "output": 2.0}})
    cfg["quotas"] = {
        "budgets": [{"id": "cap", "unit": "usd", "limit": 100, "window": "day", "match": {"org": "acme"}}]
    }
    cfg_path = tmp_path / "nexus.yaml"
    cfg_path.write_bytes(msgspec.yaml.encode(cfg))
    env = {
        **os.environ,
        "NEXUS_NATS_URL": nats_url,
        "NEXUS_VALKEY_URL": valkey_url,
        "NEXUS_VALKEY_PREFIX": valkey_prefix,
        "NEXUS_KEY_HMAC_SECRET": SECRET.decode(),
        "SIM_TEST_KEY": "sk-sim-test",
    }
    quota = QuotaProcessor(
        parse_config(cfg_path.read_bytes()),
        nats_url=nats_url,
        valkey_url=valkey_url,
        topology=topology,
        key_prefix=valkey_prefix,
    )
    projector = Projector(
        ProjectorSettings(
            nats_url=nats_url, postgres_dsn=pg_dsn, duckdb_path=None, topology=topology, fetch_timeout_s=0.05
        )
    )
    reconciler = Reconciler(nc, topology, ReconcileSettings(lost_after_s=8.0, sweep_s=0.5))
    gateway: asyncio.subprocess.Process | None = None
    reservations = QuotaKeys(valkey_prefix).res_expiry
    try:
        await quota.start()
        await projector.start()
        await reconciler.start()
        gateway = await _gateway(cfg_path, tmp_path / "data", env, topology)
        body = {
            "model": "slow",
            "stream": True,
            "messages": [{"role": "user", "content": "tell me a long story"}],
        }
        async with aiohttp.ClientSession() as http:
            resp = await http.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {keys.full}"},
            )
            assert resp.status == 200
            rid = resp.headers["x-nexus-request-id"]
            assert b"data:" in await resp.content.readline()  # the stream has started
            assert await vk.zscore(reservations, rid) is not None  # its reservation is held
            # Midway through the stream (its request.received is on the
            # stream by now, as it is within milliseconds of arriving when
            # NATS is healthy; a node that dies before publishing anything
            # leaves its events in its journal for its next start).
            async with asyncio.timeout(10):
                while rid not in reconciler.open:
                    await asyncio.sleep(0.05)
            await resp.content.readline()
            gateway.kill()  # SIGKILL, mid-stream
            await gateway.wait()
            with contextlib.suppress(aiohttp.ClientError):
                await resp.read()
            resp.release()
        if comes_back:
            gateway = await _gateway(cfg_path, tmp_path / "data", env, topology)
        conn = await asyncpg.connect(pg_dsn)
        try:
            async with asyncio.timeout(40):
                while True:
                    row = await conn.fetchrow(
                        "SELECT outcome, status FROM traffic_event WHERE request_id = $1", rid
                    )
                    if row is not None and row["outcome"] == "aborted":
                        break
                    await asyncio.sleep(0.2)
        finally:
            await conn.close()
        assert row["status"] is None
        async with asyncio.timeout(10):
            while await vk.zscore(reservations, rid) is not None:  # released by the quota processor
                await asyncio.sleep(0.1)
        assert not await vk.exists(QuotaKeys(valkey_prefix).reservation(rid))
    finally:
        if gateway is not None and gateway.returncode is None:
            gateway.kill()
            await gateway.wait()
        await reconciler.stop()
        await projector.stop()
        await quota.stop()
        await sim.close()
