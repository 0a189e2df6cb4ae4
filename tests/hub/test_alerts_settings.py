"""The alerts: section is a settings section of the Hub: set through the
admin API (validated: a bad section is a 4xx in the API's error shape),
carried by snapshots, and followed live by a running alerts worker, which
then delivers to a real receiver."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from processors.alerts.worker import AlertsWorker
from streams import codec, deadletter
from streams.config_alerts import AlertsConfig
from streams.events_alerts import AuditVerified
from streams.snapshots import Snapshot, SnapshotFollower
from streams.topology import Topology
from tests.alerts.receivers import HttpReceiver
from tests.hub.conftest import Client, RunningHub

pytestmark = pytest.mark.integration

A = "/api/admin"
REPO = Path(__file__).resolve().parents[2]


async def test_the_alerts_section_set_on_the_hub_reaches_a_running_worker(
    hub: RunningHub, admin: Client, nc: NATS, nats_url: str, topology: Topology, tmp_path: Path
) -> None:
    receiver = await HttpReceiver("webhook", secret=b"hub-fed-secret").start()
    js = nc.jetstream()
    await deadletter.ensure_stream(js, topology)
    worker = AlertsWorker(nats_url, topology, AlertsConfig(), env={"T_HUB_HOOK_SECRET": "hub-fed-secret"})
    await worker.start()

    async def on_snapshot(snap: Snapshot) -> None:
        await worker.follow(snap.config.alerts)

    follower = SnapshotFollower(
        nats_url,
        topology,
        node_kind="processor",
        node_id="alerts",
        apply=on_snapshot,
        cache_path=tmp_path / "snapshot-alerts.json",
    )
    await follower.start()
    try:
        current = (await admin.get(f"{A}/settings/alerts")).json
        assert current["rules"] == [] and current["channels"] == []
        bad = {**current, "rules": [{"kind": "audit_chain", "name": "chain", "channels": ["nowhere"]}]}
        refused = await admin.put(f"{A}/settings/alerts", bad)
        assert 400 <= refused.status < 500 and "unknown channel 'nowhere'" in refused.raw.decode(), refused
        section = {
            **current,
            "channels": [
                {
                    "kind": "webhook",
                    "name": "ops",
                    "url": receiver.url,
                    "signing_secret_env": "T_HUB_HOOK_SECRET",
                    "allow_private_network": True,
                }
            ],
            "rules": [{"kind": "audit_chain", "name": "chain", "channels": ["ops"]}],
        }
        assert (await admin.put(f"{A}/settings/alerts", section)).status == 200
        async with asyncio.timeout(20):
            while not worker.config.rules:
                await asyncio.sleep(0.05)
        event = AuditVerified(ok=False, broken_n=5, reason="record altered")
        await js.publish(topology.subject_for(event), codec.encode(event), headers={"Nats-Msg-Id": event.id})
        async with asyncio.timeout(20):
            while not receiver.got:
                await asyncio.sleep(0.05)
    finally:
        await follower.stop()
        await worker.stop()
        await receiver.stop()
        for bucket in ("ALERTS", "HEARTBEATS"):
            with contextlib.suppress(Exception):
                await js.delete_key_value(f"{topology.prefix}_{bucket}")
        with contextlib.suppress(Exception):
            await js.delete_stream(deadletter.stream_name(topology))
    [got] = receiver.got
    assert got.error == "" and got.doc["rule"] == "chain" and got.doc["details"]["broken_n"] == "5"


async def test_nexus_alerts_hub_follows_the_hub_as_a_process(
    hub: RunningHub, admin: Client, nc: NATS, nats_url: str, topology: Topology, tmp_path: Path
) -> None:
    receiver = await HttpReceiver("webhook", secret=b"hub-fed-secret").start()
    js = nc.jetstream()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nexus.cli",
        "alerts",
        "--hub",
        "--nats",
        nats_url,
        "--stream-prefix",
        topology.prefix,
        "--data-dir",
        str(tmp_path),
        cwd=REPO,
        env={**os.environ, "T_HUB_HOOK_SECRET": "hub-fed-secret", "NEXUS_POSTGRES_DSN": ""},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    lines: list[str] = []

    async def read() -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            lines.append(line.decode())

    reader = asyncio.create_task(read())

    async def seen(text: str) -> None:
        try:
            async with asyncio.timeout(60):
                while not any(text in line for line in lines):
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(f"never said {text!r}:\n{''.join(lines)}") from None

    try:
        await seen("nexus alerts: running (the Hub's snapshots")
        current = (await admin.get(f"{A}/settings/alerts")).json
        section = {
            **current,
            "channels": [
                {
                    "kind": "webhook",
                    "name": "ops",
                    "url": receiver.url,
                    "signing_secret_env": "T_HUB_HOOK_SECRET",
                    "allow_private_network": True,
                }
            ],
            "rules": [{"kind": "audit_chain", "name": "chain", "channels": ["ops"]}],
        }
        assert (await admin.put(f"{A}/settings/alerts", section)).status == 200
        await seen("configuration applied (1 rules")
        event = AuditVerified(ok=False, broken_n=6, reason="record altered")
        await js.publish(topology.subject_for(event), codec.encode(event), headers={"Nats-Msg-Id": event.id})
        async with asyncio.timeout(30):
            while not receiver.got:
                await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await reader
        await receiver.stop()
        for bucket in ("ALERTS", "HEARTBEATS", "FLEET_SYNC"):
            with contextlib.suppress(Exception):
                await js.delete_key_value(f"{topology.prefix}_{bucket}")
        with contextlib.suppress(Exception):
            await js.delete_stream(deadletter.stream_name(topology))
    assert code == 0, "".join(lines)
    [got] = receiver.got
    assert got.error == "" and got.doc["details"]["broken_n"] == "6"
