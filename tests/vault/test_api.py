"""The vault over the admin API, on a running Hub: a credential stored with
its secret and never shown again, bad input answered 4xx naming the field,
a secret replaced, a rotation rewrapping in the background, a retirement
(refused for the version in service), deletion refused while a provider
uses the credential; a Hub without a master key answers 503."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from hub.service import HubServer, HubSettings
from streams.topology import Topology
from tests.hub.conftest import ADMIN_EMAIL, Client, RunningHub, sign_in

pytestmark = pytest.mark.integration

A = "/api/admin"
SECRET = "sk-live-0f1e2d3c4b5a69788796a5b4c3d2e1f0"


async def test_credentials_and_key_versions_through_the_api(hub: RunningHub, admin: Client) -> None:
    ans = await admin.post(f"{A}/credentials", {"id": "openai-prod", "provider": "sim", "secret": SECRET})
    assert ans.status == 201, ans
    item = ans.json
    assert item["spec"] == {"id": "openai-prod", "provider": "sim", "org": "", "description": ""}
    assert item["secret"]["last4"] == SECRET[-4:] and len(item["secret"]["fingerprint"]) == 16
    assert SECRET.encode() not in ans.raw and SECRET[4:-4].encode() not in ans.raw
    got = await admin.get(f"{A}/credentials/openai-prod")
    assert got.status == 200 and got.json["secret"] == item["secret"] and SECRET.encode() not in got.raw
    listed = await admin.get(f"{A}/credentials")
    assert [i["id"] for i in listed.json["items"]] == ["openai-prod"]

    # Bad input: 4xx naming the field, in the API's error shape.
    for body, field in (
        ({"id": "x", "provider": "sim", "secret": "  "}, "secret"),
        ({"id": "x", "provider": "sim"}, None),
        ({"id": "x", "provider": "sim", "secret": "s", "plain": True}, "plain"),
        ({"id": "x", "provider": "nope", "secret": SECRET}, "provider"),
        ({"id": "bad id!", "provider": "sim", "secret": SECRET}, "id"),
    ):
        bad = await admin.post(f"{A}/credentials", body)
        assert bad.status == 422 and bad.error == "invalid_field", (body, bad)
        if field is not None:
            assert bad.json["error"]["field"] == field, bad
    dup = await admin.post(f"{A}/credentials", {"id": "openai-prod", "provider": "sim", "secret": SECRET})
    assert dup.status == 409 and dup.error == "already_exists"
    moved = await admin.patch(f"{A}/credentials/openai-prod", {"provider": "other"})
    assert moved.status == 422
    described = await admin.patch(f"{A}/credentials/openai-prod", {"description": "prod key"})
    assert described.status == 200 and described.json["spec"]["description"] == "prod key"

    replaced = await admin.put(f"{A}/credentials/openai-prod/secret", {"secret": SECRET[::-1]})
    assert replaced.status == 200, replaced
    assert replaced.json["secret"]["fingerprint"] != item["secret"]["fingerprint"]
    assert await hub.server.vault.open("openai-prod") == SECRET[::-1]  # type: ignore[union-attr]

    # Rotation: a new version, the rewrap in the background.
    vault = (await admin.get(f"{A}/vault")).json
    assert vault["available"] and vault["current_version"] == 1 and vault["credentials"] == 1
    rotated = await admin.post(f"{A}/vault/rotate", {})
    assert rotated.status == 202 and rotated.json["current_version"] == 2
    deadline = time.monotonic() + 30
    while True:
        rewrap = (await admin.get(f"{A}/vault")).json["rewrap"]
        if rewrap["target_version"] == 2 and not rewrap["running"]:
            break
        assert time.monotonic() < deadline, rewrap
        await asyncio.sleep(0.05)
    assert rewrap["rewrapped"] == 1 and rewrap["failed"] == 0
    in_service = await admin.post(f"{A}/vault/keys/2/retire", {})
    assert in_service.status == 409 and in_service.error == "invalid_transition"
    assert (await admin.post(f"{A}/vault/keys/x/retire", {})).status == 422
    assert (await admin.post(f"{A}/vault/keys/9/retire", {})).status == 404
    retired = await admin.post(f"{A}/vault/keys/1/retire", {"reason": "drill"})
    assert retired.status == 200 and retired.json["stranded"] == 0, retired
    assert [k["retired"] for k in retired.json["status"]["keys"]] == [True, False]
    assert await hub.server.vault.open("openai-prod") == SECRET[::-1]  # type: ignore[union-attr]
    bad_master = await admin.post(f"{A}/vault/rotate", {"master_key": "elsewhere"})
    assert bad_master.status == 422 and bad_master.json["error"]["field"] == "master_key"

    # In use by a provider: not deleted; then deleted.
    assert (await admin.patch(f"{A}/providers/sim", {"credential": "openai-prod"})).status == 200
    in_use = await admin.delete(f"{A}/credentials/openai-prod")
    assert in_use.status == 409 and in_use.error == "in_use"
    assert (await admin.patch(f"{A}/providers/sim", {"credential": None})).status == 200
    assert (await admin.delete(f"{A}/credentials/openai-prod")).status == 204
    assert (await admin.get(f"{A}/credentials/openai-prod")).status == 404


async def test_a_hub_without_a_master_key_answers_503(
    nc: NATS, nats_url: str, topology: Topology, tmp_path: Path
) -> None:
    server = HubServer(
        HubSettings(nats_url=nats_url, topology=topology, data_dir=tmp_path / "hub", port=0, env={})
    )
    await server.start()
    try:
        password = await server.bootstrap_admin(ADMIN_EMAIL)
        assert password is not None
        client = await sign_in(server.url, ADMIN_EMAIL, password)
        try:
            ans = await client.post(f"{A}/credentials", {"id": "c", "provider": "sim", "secret": SECRET})
            assert ans.status == 503 and "master key" in ans.json["error"]["message"], ans
            status = (await client.get(f"{A}/vault")).json
            assert status["available"] is False and status["master_keys"] == []
        finally:
            await client.close()
    finally:
        await server.stop()
