"""Where a running ``nexus gateway`` process gets new configuration:
SIGHUP re-reads its file; ``--hub`` follows the snapshots the Hub publishes
on NATS (a new key works, a revoked one is refused, within 2 s), and a
gateway restarted while the Hub is away serves its cached snapshot."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import nats
import pytest

from nexus.sim import SimServer, SimSettings, start_sim
from streams.config import NexusConfig
from streams.config_validation import parse_config
from streams.jetstream import delete_streams
from streams.keys import hash_key, new_key
from streams.snapshots import SnapshotStore
from streams.topology import Topology
from tests.gateway.conftest import free_port
from tests.hub.conftest import drop_topology

REPO = Path(__file__).resolve().parents[2]
SECRET = b"config-sources-secret-0123456789"

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _config(sim_port: int, keys: dict[str, str], revoked: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "version": 1,
        "gateway": {"node_id": "gw-src"},
        "orgs": [{"id": "acme"}],
        "projects": [{"id": "web", "org": "acme"}],
        "virtual_keys": [
            {
                "id": kid,
                "hash": hash_key(key, SECRET),
                "org": "acme",
                "project": "web",
                "status": "revoked" if kid in revoked else "active",
            }
            for kid, key in keys.items()
        ],
        "providers": [
            {
                "name": "sim",
                "base_url": f"http://127.0.0.1:{sim_port}/v1",
                "allow_private_network": True,
                "api_key_env": "SIM_SRC_KEY",
            }
        ],
        "models": [{"name": "m", "provider": "sim", "provider_model": "sim-small"}],
    }


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    s = await start_sim(SimSettings(api_key="sk-sim-src"))
    yield s
    await s.close()


async def _start(args: list[str], env_extra: dict[str, str]) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "NEXUS_KEY_HMAC_SECRET": SECRET.decode(),
        "SIM_SRC_KEY": "sk-sim-src",
        "NEXUS_GATEWAY_WORKERS": "1",
        **env_extra,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "nexus.cli", "gateway", *args),
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), 90)
        assert line, "the gateway exited before it listened"
        if b"listening on" in line:
            return proc


async def _status(port: int, key: str) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {key}"},
        ) as r,
    ):
        await r.read()
        return r.status


async def _until_status(port: int, key: str, want: int, timeout_s: float) -> float:
    """Seconds until ``key`` gets ``want``; fails after ``timeout_s``."""
    t0 = time.monotonic()
    while True:
        if await _status(port, key) == want:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"still not {want} after {timeout_s} s")
        await asyncio.sleep(0.05)


async def _stop(proc: asyncio.subprocess.Process) -> bytes:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
    assert proc.stdout is not None
    return await proc.stdout.read()


async def test_sighup_rereads_the_file_and_a_broken_file_changes_nothing(
    sim: SimServer, nats_url: str, topology: Topology, tmp_path: Path
) -> None:
    old, new = new_key(), new_key()
    path = tmp_path / "nexus.yaml"
    path.write_bytes(msgspec.yaml.encode(_config(sim.port, {"k-old": old})))
    port = free_port()
    args = ["--config", str(path), "--port", str(port), "--data-dir", str(tmp_path)]
    proc = await _start([*args, "--stream-prefix", topology.prefix], {"NEXUS_NATS_URL": nats_url})
    try:
        assert await _status(port, old) == 200 and await _status(port, new) == 401
        path.write_bytes(msgspec.yaml.encode(_config(sim.port, {"k-old": old, "k-new": new})))
        proc.send_signal(signal.SIGHUP)
        await _until_status(port, new, 200, 5)
        path.write_text("version: 1\nmodels: [{name: broken}]\n")  # no provider: refused
        proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(1.0)
        assert await _status(port, new) == 200 and await _status(port, old) == 200
    finally:
        out = await _stop(proc)
        nc = await nats.connect(nats_url)
        await delete_streams(nc.jetstream(), topology)
        await nc.close()
    assert b"SIGHUP: now serving" in out
    assert b"still serving the configuration loaded before" in out


async def test_a_gateway_follows_the_hubs_snapshots_and_serves_its_cache_without_it(
    sim: SimServer, nats_url: str, topology: Topology, tmp_path: Path
) -> None:
    alice, bob = new_key(), new_key()
    nc = await nats.connect(nats_url)
    store = SnapshotStore(nc.jetstream(), topology)
    await store.ensure()

    def config(keys: dict[str, str], revoked: tuple[str, ...] = ()) -> NexusConfig:
        return parse_config(msgspec.yaml.encode(_config(sim.port, keys, revoked)))

    await store.publish(config({"k-alice": alice}), 1)
    port = free_port()
    args = ["--hub", "--port", str(port), "--data-dir", str(tmp_path), "--stream-prefix", topology.prefix]
    proc = await _start(args, {"NEXUS_NATS_URL": nats_url})
    try:
        assert await _status(port, alice) == 200 and await _status(port, bob) == 401
        await store.publish(config({"k-alice": alice, "k-bob": bob}), 2)
        added = await _until_status(port, bob, 200, 2.0)
        await store.publish(config({"k-alice": alice, "k-bob": bob}, revoked=("k-bob",)), 3)
        revoked = await _until_status(port, bob, 401, 2.0)
        print(
            f"\nkey added: served after {added * 1000:.0f} ms; revoked: refused after {revoked * 1000:.0f} ms"
        )
    finally:
        await _stop(proc)
    # The Hub (NATS) away: a restarted gateway serves the snapshot it cached.
    args = ["--hub", "--port", str(port), "--data-dir", str(tmp_path), "--stream-prefix", topology.prefix]
    proc = await _start(args, {"NEXUS_NATS_URL": f"nats://127.0.0.1:{free_port()}"})
    try:
        assert await _status(port, alice) == 200 and await _status(port, bob) == 401
    finally:
        await _stop(proc)
        await drop_topology(nc, topology)
        await nc.close()
