"""What ``nexus up`` does with its config file on the Hub's first start."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from nats.aio.client import Client as NATS

from hub.control import ControlPlane
from hub.importer import holds_config
from hub.service import HubServer, HubSettings
from hub.store import ConfigStore
from nexus.wiring import start_hub
from streams.topology import Topology
from streams.vault.master import new_master_key
from tests.hub.conftest import demo_config
from tests.services import free_port

ADMIN = "admin@example.com"
DEMO = Path(__file__).resolve().parents[2] / "nexus" / "demo" / "config.yaml"


async def test_the_file_is_imported_although_the_hub_wrote_events_of_its_own_first(
    nc: NATS, nats_url: str, topology: Topology, pg_dsn: str, tmp_path: Path
) -> None:
    """A Hub writes events of its own as it starts (it enrols itself as a
    thing of the fleet).  CI saw that write land before ``nexus up`` asked
    whether the CONFIG stream was empty: the import of its file was skipped,
    the snapshot carried no HMAC secret and the gateway never served.  Here
    a Hub has written first (as a start that stopped before the import
    would); the next start still imports, and the one after does not."""
    first = HubServer(HubSettings(nats_url=nats_url, topology=topology, data_dir=tmp_path / "hub", port=0))
    await first.start()
    try:
        assert first.control is not None
        for _ in range(200):
            if first.control.state.seq:
                break
            await asyncio.sleep(0.05)
        assert first.control.state.seq > 0, "the Hub did not enrol itself"
        assert not holds_config(first.control.state)
    finally:
        await first.stop()

    ep = {"nats_url": nats_url, "postgres_dsn": pg_dsn}
    started, stop = await start_hub(demo_config(), ep, topology, tmp_path, port=0, admin_email=ADMIN)
    await stop()
    assert started.imported

    control = ControlPlane(ConfigStore(nc.jetstream(), topology))
    await control.start()
    try:
        assert holds_config(control.state)
        auth = control.state.get("settings", "auth")
        assert auth is not None and auth.spec.secret == demo_config().auth.secret
    finally:
        await control.stop()

    again, stop = await start_hub(demo_config(), ep, topology, tmp_path, port=0, admin_email=ADMIN)
    await stop()
    assert not again.imported


async def test_hub_run_imports_its_file_although_the_hub_wrote_events_of_its_own_first(
    nats_url: str, topology: Topology, pg_dsn: str, tmp_path: Path
) -> None:
    """``nexus hub run --import FILE`` asked the same question as ``nexus up``
    did (is the CONFIG sequence 0?) and raced the same way (a CI run's
    canary test found a Hub without the demo's providers).  After a start
    that wrote only the Hub's own events it imports; the next start says
    the Hub holds a configuration and changes nothing."""
    first = HubServer(HubSettings(nats_url=nats_url, topology=topology, data_dir=tmp_path / "hub", port=0))
    await first.start()
    try:
        assert first.control is not None
        for _ in range(200):
            if first.control.state.seq:
                break
            await asyncio.sleep(0.05)
        assert first.control.state.seq > 0, "the Hub did not enrol itself"
    finally:
        await first.stop()

    async def hub_run(n: int) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
        env["NEXUS_VAULT_MASTER_KEY"] = new_master_key()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nexus.cli", "hub", "run", "--nats", nats_url, "--prefix", topology.prefix,
            "--dsn", pg_dsn, "--port", str(free_port()), "--data-dir", str(tmp_path / f"run-{n}"),
            "--admin-email", ADMIN, "--import", str(DEMO),
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        assert proc.stdout is not None
        said = b""
        try:
            async with asyncio.timeout(90):
                while b"nexus hub: admin API on" not in said:
                    line = await proc.stdout.readline()
                    assert line, said.decode()
                    said += line
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.communicate(), 30)
        return said.decode()

    said = await hub_run(1)
    assert f"nexus hub: imported {DEMO}" in said, said
    said = await hub_run(2)
    assert "holds a configuration already" in said, said
    assert f"nexus hub: imported {DEMO}" not in said, said
