"""The fleet through the admin API on a real Hub (real NATS, Postgres): a
thing enrolled with its token shown once (only its hash in the CONFIG
stream), its shadow, the effective config with template and overrides,
revocation closing the sync endpoints, and the Hub itself registered as a
thing by its own report."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from nats.aio.client import Client as NATS

from hub.fleet.registry import token_hash
from hub.store import ConfigStore
from streams.fleet_wire import DESIRED_PATH, SIGNAL_PATH
from streams.topology import Topology
from tests.hub.conftest import Client, RunningHub

pytestmark = [pytest.mark.integration]

A = "/api/admin"


async def _thing_get(url: str, path: str, token: str) -> tuple[int, object]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(url + path, headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        return r.status, await r.json()


async def test_enrol_show_override_revoke(
    hub: RunningHub, admin: Client, nc: NATS, topology: Topology
) -> None:
    made = await admin.post(f"{A}/things", {"id": "laptop-42", "type": "agent", "name": "Ann's laptop"})
    assert made.status == 201, made
    token = made.json["token"]
    assert token.startswith("nxt_") and made.json["item"]["thing"]["standing"] == "active"
    again = await admin.post(f"{A}/things", {"id": "laptop-42", "type": "agent"})
    assert again.status == 409 and again.error == "already_exists"
    bad = await admin.post(f"{A}/things", {"id": "x", "type": "toaster"})
    assert bad.status == 422 and bad.json["error"]["field"] == "type"

    shown = await admin.get(f"{A}/things/laptop-42")
    assert shown.status == 200, shown
    assert shown.json["status"] == "enrolled"  # no report yet
    assert "token" not in shown.raw.decode() and token_hash(token) not in shown.raw.decode()
    assert shown.json["shadow"]["reported"] is None
    assert "config" in shown.json["shadow"]["desired"]["keys"]  # agents run snapshots

    tpl = await admin.put(
        f"{A}/thing-templates/agent", {"type": "agent", "keys": {"log_level": "info", "capture": False}}
    )
    assert tpl.status == 200, tpl
    no_reason = await admin.put(f"{A}/things/laptop-42/overrides/log_level", {"value": "debug", "reason": ""})
    assert no_reason.status == 422 and no_reason.json["error"]["field"] == "reason"
    bad_key = await admin.put(f"{A}/things/laptop-42/overrides/Bad%20Key", {"value": 1, "reason": "x"})
    assert bad_key.status == 422
    eff = await admin.put(
        f"{A}/things/laptop-42/overrides/log_level",
        {"value": "debug", "reason": "INC-7: chasing a TLS error", "expires_at": "2099-01-01T00:00:00Z"},
    )
    assert eff.status == 200, eff
    keys = eff.json["keys"]
    assert keys["log_level"]["value"] == "debug" and keys["log_level"]["source"] == "override"
    assert keys["log_level"]["reason"] == "INC-7: chasing a TLS error"
    assert keys["log_level"]["expires_at"].startswith("2099-01-01")
    assert keys["capture"] == {"value": False, "source": "template", "set_by": keys["capture"]["set_by"]} or (
        keys["capture"]["source"] == "template"
    )
    assert keys["config"]["source"] == "hub"
    shown = await admin.get(f"{A}/things/laptop-42/config")
    assert shown.json["keys"]["log_level"]["value"] == "debug"

    # The thing's own view: the desired state it pulls with its token.
    status, desired = await _thing_get(hub.url, DESIRED_PATH, token)
    assert status == 200 and desired["keys"]["log_level"] == "debug"  # type: ignore[index]
    status, _ = await _thing_get(hub.url, DESIRED_PATH, "nxt_not-a-token")
    assert status == 401

    cleared = await admin.delete(f"{A}/things/laptop-42/overrides/log_level")
    assert cleared.status == 200 and cleared.json["keys"]["log_level"]["source"] == "template"
    assert (await admin.delete(f"{A}/things/laptop-42/overrides/log_level")).status == 404

    # A long poll held open is answered 'revoked' when the thing is revoked.
    status, now = await _thing_get(hub.url, f"{SIGNAL_PATH}?wait=0", token)
    assert status == 200 and now["kind"] == "changed"  # type: ignore[index]
    at = f"version={now['version']}&push={now['push']}"  # type: ignore[index]
    poll = asyncio.create_task(_thing_get(hub.url, f"{SIGNAL_PATH}?{at}&wait=20", token))
    await asyncio.sleep(0.3)
    revoked = await admin.post(f"{A}/things/laptop-42/revoke", {"reason": "stolen"})
    assert revoked.status == 200 and revoked.json["status"] == "revoked"
    status, sig = await asyncio.wait_for(poll, 10)
    assert status == 200 and sig["kind"] == "revoked"  # type: ignore[index]
    status, _ = await _thing_get(hub.url, DESIRED_PATH, token)
    assert status == 401
    assert (await admin.put(f"{A}/things/laptop-42/overrides/k", {"value": 1, "reason": "x"})).status == 409

    # Only the token's hash is in the CONFIG stream.
    raw = b"".join(
        [data async for _, data in ConfigStore(nc.jetstream(), topology).read(1, until=hub.control.state.seq)]
    )
    assert token.encode() not in raw and token_hash(token).encode() in raw


async def test_the_hub_and_nats_nodes_register_by_reporting(hub: RunningHub, admin: Client) -> None:
    async def hub_thing() -> dict[str, object]:
        while True:
            ans = await admin.get(f"{A}/things?type=hub")
            if ans.json["items"]:
                return dict(ans.json["items"][0])
            await asyncio.sleep(0.05)

    item = await asyncio.wait_for(hub_thing(), 10)
    assert item["id"] == "hub.hub" and item["status"] == "online"
    detail = (await admin.get(f"{A}/things/hub.hub")).json
    posture = detail["shadow"]["reported"]["posture"]
    assert posture["software_version"] and isinstance(posture["config_seq"], int)
    assert detail["item"]["thing"]["enrolled_how"] == "report"
    assert detail["shadow"]["converged"] is True
    online = await admin.get(f"{A}/things?status=online")
    assert [i["id"] for i in online.json["items"]] == ["hub.hub"]
    anon = Client(hub.url)
    try:
        health = (await anon.get("/healthz")).json
    finally:
        await anon.close()
    assert health["fleet"] == {"online": 1}  # counts only: no ids on an unauthenticated endpoint
