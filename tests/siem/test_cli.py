"""``nexus siem`` as an operator runs it: a process started from a config
file, forwarding to a real HEC-shaped receiver, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import nats
import pytest

from streams import codec
from streams.events import RequestFailed, Tenant
from streams.jetstream import ensure_streams
from streams.topology import Topology
from tests.siem.receivers import HecServer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


async def test_nexus_siem_process_forwards_and_stops_cleanly(
    nats_url: str, topology: Topology, tmp_path: Path
) -> None:
    hec = HecServer("cli-token-123456")
    await hec.start()
    cfg = tmp_path / "nexus.yaml"
    cfg.write_text(
        "siem:\n"
        "  sinks:\n"
        f"    - {{kind: splunk_hec, name: hec, url: 'http://127.0.0.1:{hec.port}', token_env: CLI_HEC,\n"
        "       allow_private_network: true, filter: {statuses: ['5xx']}}\n"
    )
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js, topology)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nexus.cli",
        "siem",
        "--config",
        str(cfg),
        "--nats",
        nats_url,
        "--prefix",
        topology.prefix,
        cwd=REPO,
        env={**os.environ, "CLI_HEC": "cli-token-123456"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            line = await proc.stdout.readline()
        assert b"forwarding to hec" in line, line
        events = [RequestFailed(status=s, tenant=Tenant(org_id="o")) for s in (500, 404, 503, 429, 502)]
        for e in events:
            await js.publish(topology.subject_for(e), codec.encode(e), headers={"Nats-Msg-Id": e.id})
        want = {e.id for e in events if e.status >= 500}
        await hec.arrivals.wait_for(want, 20)
        await asyncio.sleep(0.3)
        assert hec.arrivals.ids == want
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await hec.stop()
        for name in (topology.traffic_stream, f"{topology.prefix}_DEADLETTER"):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(name)
        await nc.close()
