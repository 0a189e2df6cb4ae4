"""The Hub while NATS is away: a change is refused with 503 (the one error
shape, retryable), nothing half-done; when NATS returns the Hub takes
changes again without a restart, and a retried command applies once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hub.service import HubServer, HubSettings
from streams.topology import Topology
from tests.hub.conftest import ADMIN_EMAIL, Client, demo_config, sign_in
from tests.services import PrivateNats

pytestmark = [pytest.mark.integration, pytest.mark.slow]

A = "/api/admin"


async def test_changes_while_nats_is_away_are_503_and_work_again_after(
    tmp_path: Path, pg_dsn: str, topology: Topology
) -> None:
    nats_server = PrivateNats(tmp_path / "nats")
    nats_server.start()
    server = HubServer(
        HubSettings(
            nats_url=nats_server.url,
            topology=topology,
            data_dir=tmp_path / "hub",
            postgres_dsn=pg_dsn,
            port=0,
        )
    )
    admin: Client | None = None
    try:
        await server.start()
        password = await server.bootstrap_admin(ADMIN_EMAIL)
        assert password is not None
        await server.import_config(demo_config())
        admin = await sign_in(server.url, ADMIN_EMAIL, password)
        assert (await admin.post(f"{A}/orgs", {"id": "before"})).status == 201
        nats_server.stop()
        ans = await admin.post(f"{A}/orgs", {"id": "during"}, headers={"Idempotency-Key": "during-1"})
        assert (ans.status, ans.error) == (503, "unavailable"), ans
        assert "Traceback" not in ans.raw.decode()
        nats_server.start()
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            ans = await admin.post(f"{A}/orgs", {"id": "during"}, headers={"Idempotency-Key": "during-1"})
            if ans.status == 201 or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.5)
        assert ans.status == 201, ans
        again = await admin.post(f"{A}/orgs", {"id": "during"}, headers={"Idempotency-Key": "during-1"})
        assert again.status == 201 and again.json["version"] == ans.json["version"]
        assert server.control is not None
        assert [r.id for r in server.control.state.all("org")] == ["demo-org", "before", "during"]
    finally:
        if admin is not None:
            await admin.close()
        await server.stop()
        nats_server.stop()
