"""``nexus gateway`` as a process: a bad config is a clear error; a good
one serves requests, publishes their events to JetStream and stops cleanly
on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import msgspec
import nats
import pytest

from nexus.sim import SimSettings, start_sim
from streams import codec
from streams.jetstream import delete_streams
from streams.topology import Topology
from tests.gateway.conftest import SECRET, config_yaml, free_port, make_keys

REPO = Path(__file__).resolve().parents[2]


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("version: 1\ngateway: {prot: 1}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "ingress.gateway.cli", "--config", str(cfg)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "prot" in proc.stderr and "Traceback" not in proc.stderr


def _quota_config(tmp_path: Path) -> Path:
    cfg = msgspec.yaml.decode(config_yaml(free_port(), free_port(), make_keys()))
    cfg["gateway"]["port"] = free_port()
    cfg["quotas"] = {"budgets": [{"id": "cap", "unit": "usd", "limit": 1.0, "window": "day"}]}
    path = tmp_path / "quota.yaml"
    path.write_bytes(msgspec.yaml.encode(cfg))
    return path


def test_quotas_without_valkey_refuse_to_start_with_one_clear_line(tmp_path: Path) -> None:
    """It used to start and answer every request under a budget 503 without a word."""
    env = {k: v for k, v in os.environ.items() if k != "NEXUS_VALKEY_URL"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ingress.gateway.cli",
            "--config",
            str(_quota_config(tmp_path)),
            "--workers",
            "1",
        ],
        cwd=REPO,
        env={**env, "NEXUS_KEY_HMAC_SECRET": SECRET.decode(), "NEXUS_NATS_URL": "nats://127.0.0.1:1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "NEXUS_VALKEY_URL" in lines[0] and "quotas (1 budgets" in lines[0]
    assert "listening" not in proc.stdout


@pytest.mark.integration
async def test_quotas_with_valkey_start(tmp_path: Path, valkey_url: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ingress.gateway.cli",
        "--config",
        str(_quota_config(tmp_path)),
        "--workers",
        "1",
        "--data-dir",
        str(tmp_path),
        cwd=REPO,
        env={
            **os.environ,
            "NEXUS_KEY_HMAC_SECRET": SECRET.decode(),
            "NEXUS_VALKEY_URL": valkey_url,
            "NEXUS_NATS_URL": "nats://127.0.0.1:1",
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line, "the gateway exited before it listened"
            if b"listening on" in line:
                break
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()


@pytest.mark.integration
@pytest.mark.slow
async def test_gateway_process_serves_and_publishes(
    nats_url: str, topology: Topology, tmp_path: Path
) -> None:
    sim = await start_sim(SimSettings(api_key="sk-sim-test"))
    keys = make_keys()
    port = free_port()
    cfg = msgspec.yaml.decode(config_yaml(sim.port, free_port(), keys))
    cfg["gateway"]["port"] = port
    path = tmp_path / "nexus.yaml"
    path.write_bytes(msgspec.yaml.encode(cfg))
    env = {
        **os.environ,
        "NEXUS_NATS_URL": nats_url,
        "NEXUS_KEY_HMAC_SECRET": SECRET.decode(),
        "SIM_TEST_KEY": "sk-sim-test",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ingress.gateway.cli",
        "--config",
        str(path),
        "--data-dir",
        str(tmp_path),
        "--stream-prefix",
        topology.prefix,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        while True:  # log lines first, then the banner
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, "the gateway exited before it listened"
            if b"listening on" in line:
                break
        assert f":{port}/v1" in line.decode()
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                json={"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]},
                headers={"Authorization": f"Bearer {keys.full}"},
            ) as r,
        ):
            assert r.status == 200
            request_id = r.headers["x-nexus-request-id"]
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            types: list[str] = []
            for _ in range(50):
                info = await js.stream_info(topology.traffic_stream)
                if info.state.messages >= 4:
                    msgs = [
                        await js.get_msg(topology.traffic_stream, s)
                        for s in range(1, info.state.last_seq + 1)
                    ]
                    types = [
                        type(codec.decode(m.data)).__name__
                        for m in msgs
                        if codec.decode(m.data).request_id == request_id
                    ]
                    break
                await asyncio.sleep(0.1)
            assert types == ["RequestReceived", "UpstreamResult", "UsageRecorded", "RequestCompleted"]
        finally:
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 15) == 0
            await delete_streams(nc.jetstream(), topology)
            await nc.close()
    finally:
        if proc.returncode is None:
            proc.kill()
        await sim.close()
