"""``nexus gateway --workers 2``: two processes on one port, the kernel
spreading connections over them, and quotas and rate limits exact across
them (their counters are in Valkey, reserved atomically)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import nats
import pytest

from adapters.canonical import ChatRequest, Message
from ingress.quota.estimate import estimate_prompt_tokens, output_budget
from nexus.sim import SimSettings, start_sim
from streams import codec
from streams.events import RequestReceived
from streams.jetstream import delete_streams
from streams.keys import hash_key, new_key
from streams.topology import Topology
from tests.gateway.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
SECRET = b"workers-test-secret-0123456789"
RPM = 30
MAX_TOKENS = 20
PROMPT = "count to three"

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _config(sim_port: int, port: int, rpm_key: str, tok_key: str, token_limit: int) -> bytes:
    project = {"org": "acme", "project": "web"}
    return msgspec.yaml.encode(
        {
            "version": 1,
            "gateway": {"port": port, "node_id": "gw-workers", "max_inflight": 1024},
            "orgs": [{"id": "acme"}],
            "projects": [{"id": "web", "org": "acme"}],
            "virtual_keys": [
                {"id": "k-rpm", "hash": hash_key(rpm_key, SECRET), **project},
                {"id": "k-tok", "hash": hash_key(tok_key, SECRET), **project},
            ],
            "providers": [
                {
                    "name": "sim",
                    "base_url": f"http://127.0.0.1:{sim_port}/v1",
                    "allow_private_network": True,
                    "api_key_env": "SIM_WORKERS_KEY",
                }
            ],
            "models": [{"name": "gpt-w", "provider": "sim", "provider_model": "sim-small"}],
            "quotas": {
                "budgets": [
                    {
                        "id": "tok",
                        "unit": "tokens",
                        "limit": token_limit,
                        "window": "day",
                        "match": {"key": "k-tok"},
                        "per": ["key"],
                        "action": "hard",
                    }
                ],
                "rate_limits": [{"id": "rpm", "match": {"key": "k-rpm"}, "per": ["key"], "rpm": RPM}],
            },
        }
    )


async def _burst(url: str, key: str, n: int) -> list[int]:
    """``n`` requests at once, each on a connection of its own (so the
    kernel can hand them to either worker)."""

    async def one(i: int) -> int:
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
            http.post(
                f"{url}/v1/chat/completions",
                json={
                    "model": "gpt-w",
                    "max_tokens": MAX_TOKENS,
                    "messages": [{"role": "user", "content": PROMPT}],
                },
                headers={"Authorization": f"Bearer {key}"},
            ) as r,
        ):
            await r.read()
            return r.status

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def test_two_workers_serve_one_port_with_exact_quotas(
    nats_url: str, valkey_url: str, valkey_prefix: str, topology: Topology, tmp_path: Path
) -> None:
    chat = ChatRequest(model="gpt-w", max_tokens=MAX_TOKENS, messages=[Message(role="user", content=PROMPT)])
    per_request = estimate_prompt_tokens(chat, "openai", "gpt-w") + output_budget(chat, 0, 4096)
    fits = 7  # requests the token budget admits; one more would pass it
    token_limit = per_request * fits + per_request // 2

    sim = await start_sim(SimSettings(api_key="sk-sim-workers"))
    rpm_key, tok_key = new_key(), new_key()
    port = free_port()
    path = tmp_path / "nexus.yaml"
    path.write_bytes(_config(sim.port, port, rpm_key, tok_key, token_limit))
    env = {
        **os.environ,
        "NEXUS_NATS_URL": nats_url,
        "NEXUS_VALKEY_URL": valkey_url,
        "NEXUS_VALKEY_PREFIX": valkey_prefix,
        "NEXUS_KEY_HMAC_SECRET": SECRET.decode(),
        "SIM_WORKERS_KEY": "sk-sim-workers",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nexus.cli",
        "gateway",
        "--config",
        str(path),
        "--data-dir",
        str(tmp_path),
        "--stream-prefix",
        topology.prefix,
        "--workers",
        "2",
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    nc: Any = None
    try:
        assert proc.stdout is not None
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), 90)
            assert line, "the gateway exited before it listened"
            if b"listening on" in line:
                break
        assert b"2 workers" in line

        rpm = await _burst(url, rpm_key, 3 * RPM)
        tok = await _burst(url, tok_key, 3 * fits)
        print(
            f"\nrpm {RPM}: {rpm.count(200)} admitted of {len(rpm)}; token budget for {fits}: {tok.count(200)}"
        )
        assert rpm.count(200) == RPM and rpm.count(429) == 2 * RPM
        assert tok.count(200) == fits and tok.count(429) == 2 * fits

        # Both workers served: their node ids are in the events.
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        nodes: set[str] = set()
        for _ in range(100):
            info = await js.stream_info(topology.traffic_stream)
            nodes = set()
            for seq in range(1, info.state.last_seq + 1):
                event = codec.decode((await js.get_msg(topology.traffic_stream, seq)).data)
                if isinstance(event, RequestReceived):
                    nodes.add(event.node.id)
            if len(nodes) == 2:
                break
            await asyncio.sleep(0.1)
        assert nodes == {"gw-workers-w0", "gw-workers-w1"}
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 45)
            assert code == 0
        if nc is not None:
            await delete_streams(nc.jetstream(), topology)
            await nc.close()
        await sim.close()


async def test_a_dead_worker_is_replaced(tmp_path: Path, nats_url: str, topology: Topology) -> None:
    """A worker killed from outside is restarted, and the port keeps
    serving meanwhile (the other worker has it)."""
    sim = await start_sim(SimSettings(api_key="sk-sim-workers"))
    port = free_port()
    path = tmp_path / "nexus.yaml"
    key = new_key()
    cfg = msgspec.yaml.decode(_config(sim.port, port, key, new_key(), 1000))
    cfg.pop("quotas")
    path.write_bytes(msgspec.yaml.encode(cfg))
    env = {
        **os.environ,
        "NEXUS_NATS_URL": nats_url,
        "NEXUS_KEY_HMAC_SECRET": SECRET.decode(),
        "SIM_WORKERS_KEY": "sk-sim-workers",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "nexus.cli", "gateway", "--config", str(path), "--data-dir", str(tmp_path)),
        *("--stream-prefix", topology.prefix, "--workers", "2"),
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        while b"listening on" not in await asyncio.wait_for(proc.stdout.readline(), 90):
            pass
        workers = await _children(proc.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        # Once it is gone (its listening socket closed with it), the other
        # worker has every new connection.  (Connections queued on it when it
        # died are reset unless net.ipv4.tcp_migrate_req hands them over.)
        while _alive(workers[0]):
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # the kernel unhashes a dead listener as it closes; give it a moment
        assert set(await _burst(f"http://127.0.0.1:{port}", key, 10)) == {200}
        for _ in range(150):
            now = await _children(proc.pid)
            if len(now) == 2 and workers[0] not in now:
                break
            await asyncio.sleep(0.1)
        assert len(now) == 2 and workers[0] not in now
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 45) == 0
        nc = await nats.connect(nats_url)
        await delete_streams(nc.jetstream(), topology)
        await nc.close()
        await sim.close()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()]


def test_a_workers_command_line_is_the_parents_with_its_index_and_port() -> None:
    from ingress.gateway.workers import worker_argv

    argv = worker_argv(["--config", "c.yaml", "--workers", "4", "--port=0", "--host", "::1"], 2, 3050)
    assert argv[1:4] == ["-m", "nexus.cli", "gateway"]
    assert argv[4:-2] == ["--config", "c.yaml", "--host", "::1", "--port", "3050", "--worker-index", "2"]
    assert argv[-2:] == ["--parent", str(os.getpid())]
