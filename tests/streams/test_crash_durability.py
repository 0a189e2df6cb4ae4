"""Must-show (issue 13, item 3): ``kill -9`` of a real gateway process while
NATS hangs, under load: every request answered 200 has its row after the
gateway restarts.

A private nats-server is paused with SIGSTOP (connected, not acknowledging:
the case that used to keep events in memory for the 2 s ack timeout), the
gateway keeps answering, and is killed with SIGKILL in the middle of the
load.  NATS resumes, the gateway starts again on the same data directory,
and the projector's ``traffic_event`` rows are counted against the request
ids the clients saw answered 200."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg
import msgspec
import pytest

from nexus.sim.server import SimSettings, start_sim
from projections.projector import Projector
from projections.settings import ProjectorSettings
from streams.topology import Topology
from tests.gateway.conftest import SECRET, config_yaml, free_port, make_keys
from tests.services import PrivateNats

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


async def _start_gateway(
    cfg: Path, data: Path, topology: Topology, nats_url: str
) -> asyncio.subprocess.Process:
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
        str(cfg),
        "--data-dir",
        str(data),
        "--stream-prefix",
        topology.prefix,
        "--node-id",
        "crash-test",
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

    async def drain() -> None:  # keep its pipe from filling up
        assert proc.stdout is not None
        while await proc.stdout.readline():
            pass

    asyncio.get_running_loop().create_task(drain())
    return proc


async def test_kill_9_while_nats_hangs_loses_no_answered_request(
    tmp_path: Path, topology: Topology, pg_dsn: str
) -> None:
    nats = PrivateNats(tmp_path / "nats")
    nats.start()
    sim = await start_sim(SimSettings(api_key="sk-sim-test"))
    keys = make_keys()
    port = free_port()
    cfg = msgspec.yaml.decode(config_yaml(sim.port, free_port(), keys, max_inflight=256))
    cfg["gateway"]["port"] = port
    cfg_path = tmp_path / "nexus.yaml"
    cfg_path.write_bytes(msgspec.yaml.encode(cfg))
    data = tmp_path / "data"
    gateway: asyncio.subprocess.Process | None = None
    answered: set[str] = set()
    paused_answers = 0
    paused = False
    try:
        gateway = await _start_gateway(cfg_path, data, topology, nats.url)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        headers = {"Authorization": f"Bearer {keys.full}"}
        stop_load = asyncio.Event()

        async def client(http: aiohttp.ClientSession, n: int) -> None:
            nonlocal paused_answers
            i = 0
            while not stop_load.is_set():
                i += 1
                body = {"model": "sim-small", "messages": [{"role": "user", "content": f"c{n} r{i}"}]}
                try:
                    async with http.post(url, json=body, headers=headers) as r:
                        await r.read()
                        if r.status == 200:
                            answered.add(r.headers["x-nexus-request-id"])
                            paused_answers += paused
                except (TimeoutError, aiohttp.ClientError):
                    await asyncio.sleep(0.05)  # the gateway is gone: keep trying until told to stop

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            clients = [asyncio.create_task(client(http, n)) for n in range(16)]
            await asyncio.sleep(1.5)  # traffic flowing into JetStream
            assert nats.proc is not None
            nats.proc.send_signal(signal.SIGSTOP)  # connected, not acknowledging
            paused = True
            await asyncio.sleep(3.0)  # past the old 2 s ack timeout, and the new one
            gateway.kill()  # SIGKILL: no shutdown, no flush
            await gateway.wait()
            await asyncio.sleep(0.3)
            stop_load.set()
            await asyncio.gather(*clients)
        nats.proc.send_signal(signal.SIGCONT)
        paused = False
        assert paused_answers > 50, f"only {paused_answers} requests were answered while NATS hung"

        gateway = await _start_gateway(cfg_path, data, topology, nats.url)  # the same data directory
        settings = ProjectorSettings(
            nats_url=nats.url,
            postgres_dsn=pg_dsn,
            duckdb_path=None,
            topology=topology,
            batch_size=2000,
            fetch_timeout_s=0.05,
        )
        rows: set[str] = set()
        async with Projector(settings) as _projector:
            conn = await asyncpg.connect(pg_dsn)
            try:
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline:
                    records = await conn.fetch(
                        "SELECT request_id FROM traffic_event"
                        " WHERE request_id = ANY($1::text[]) AND status = 200",
                        list(answered),
                    )
                    rows = {r["request_id"] for r in records}
                    if rows >= answered:
                        break
                    await asyncio.sleep(0.5)
            finally:
                await conn.close()
        lost = answered - rows
        print(f"answered 200: {len(answered)}, rows: {len(rows)}, lost: {len(lost)}")
        assert not lost, f"{len(lost)} requests answered 200 have no row, e.g. {sorted(lost)[:5]}"
    finally:
        if nats.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                nats.proc.send_signal(signal.SIGCONT)
        if gateway is not None and gateway.returncode is None:
            gateway.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(gateway.wait(), 15)
            except TimeoutError:
                gateway.kill()
        await sim.close()
        nats.stop()
