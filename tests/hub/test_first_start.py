"""What ``nexus up`` does with its config file on the Hub's first start."""

from __future__ import annotations

import asyncio
from pathlib import Path

from nats.aio.client import Client as NATS

from hub.control import ControlPlane
from hub.importer import holds_config
from hub.service import HubServer, HubSettings
from hub.store import ConfigStore
from nexus.wiring import start_hub
from streams.topology import Topology
from tests.hub.conftest import demo_config

ADMIN = "admin@example.com"


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
