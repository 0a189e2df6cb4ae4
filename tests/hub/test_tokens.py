"""Admin API tokens: shown once, stored as a keyed hash only, acting as their
user (never more; narrowed by a policy when asked), expiring, revocable by
their owner or an admin, listed without secrets, audited; a token cannot
mint a token; SCIM tokens are no admin credential and admin tokens no SCIM
credential.  Real NATS, a real Hub over HTTP."""

from __future__ import annotations

import asyncio
import datetime as dt

import msgspec
import pytest
from nats.aio.client import Client as NATS

from hub.service import hmac_secret_of
from hub.signin.tokens import IssueToken, display_prefix, new_token, token_hash
from streams.config_hub import ApiTokenSpec
from streams.events import now_ms, uuid7
from streams.events_admin import AdminAction
from streams.topology import Topology
from tests.hub.conftest import Client, RunningHub, sign_in

pytestmark = pytest.mark.integration

A = "/api/admin"
PASSWORD = "a-long-enough-password-42"


async def _stream_bytes(nc: NATS, stream: str) -> list[bytes]:
    js = nc.jetstream()
    info = await js.stream_info(stream)
    return [
        (await js.get_msg(stream, seq)).data for seq in range(info.state.first_seq, info.state.last_seq + 1)
    ]


async def test_a_token_is_shown_once_stored_hashed_acts_as_its_user_and_is_revocable(
    hub: RunningHub, admin: Client, nc: NATS, topology: Topology
) -> None:
    made = await admin.post(f"{A}/auth/tokens", {"description": "ci", "expires_in_days": 30})
    assert made.status == 201, made
    token, item = made.json["token"], made.json["item"]
    assert token.startswith("nxt_") and len(token) == 68
    assert item["key"]["status"] == "active" and token.startswith(item["key"]["prefix"])
    assert item["spec"]["user"] == "admin" and item["spec"]["kind"] == "admin"
    # Acts as the admin.
    bot = Client(hub.url, token)
    try:
        me = (await bot.get(f"{A}/auth/me")).json
        assert (me["via"], me["token_id"], me["user"]["id"]) == ("api_token", item["id"], "admin")
        assert (await bot.post(f"{A}/orgs", {"id": "made-by-token"})).status == 201
        # Bearer calls need no CSRF token; a token cannot mint a token.
        refused = await bot.post(f"{A}/auth/tokens", {"description": "child"})
        assert (refused.status, refused.error) == (403, "access_denied"), refused
        # Listed without secrets, by the owner and by an admin.
        listed = (await admin.get(f"{A}/auth/tokens")).json["items"]
        assert [t["id"] for t in listed] == [item["id"]]
        assert (await admin.get(f"{A}/users/admin/tokens")).json["items"][0]["id"] == item["id"]
        everything = msgspec.json.encode(listed)
        assert token.encode() not in everything and b"hash" not in everything
        # Nowhere in the CONFIG stream (only its keyed hash), nor the audit trail.
        config = b"".join(await _stream_bytes(nc, topology.config_stream))
        assert token.encode() not in config
        secret = hmac_secret_of(hub.control.state, hub.server.settings.env)
        assert token_hash(token, secret).encode() in config  # the keyed hash is what is kept
        admin_records = b"".join(await _stream_bytes(nc, topology.admin_stream))
        assert token.encode() not in admin_records
        # Revoked by its owner: refused on the next request.
        assert (await admin.delete(f"{A}/auth/tokens/{item['id']}")).status == 204
        gone = await bot.get(f"{A}/auth/me")
        assert (gone.status, gone.error) == (401, "unauthenticated")
        after = (await admin.get(f"{A}/auth/tokens")).json["items"][0]
        assert after["key"]["status"] == "revoked"
    finally:
        await bot.close()
    raw = await _stream_bytes(nc, topology.admin_stream)
    records = [msgspec.json.decode(b, type=AdminAction) for b in raw if b'"type":"admin.action"' in b]
    actions = [(r.action, r.status, r.decision) for r in records]
    assert ("auth:token.create", 201, "self") in actions
    assert ("auth:token.create", 403, "token_from_token") in actions
    assert ("auth:token.revoke", 204, "self") in actions


async def test_a_token_narrowed_by_a_policy_gets_only_what_both_allow(hub: RunningHub, admin: Client) -> None:
    made = await admin.post(f"{A}/auth/tokens", {"policy": "NexusViewer", "expires_in_days": 1})
    assert made.status == 201, made
    bot = Client(hub.url, made.json["token"])
    try:
        assert (await bot.get(f"{A}/orgs")).status == 200
        assert (await bot.get(f"{A}/orgs/demo-org")).status == 200
        denied = await bot.post(f"{A}/orgs", {"id": "nope"})
        assert (denied.status, denied.error) == (403, "access_denied"), denied
        me = (await bot.get(f"{A}/auth/me")).json
        assert me["narrowed_by"] == ["NexusViewer@*"]
        org_nrn = "nrn:nexus:iam:demo-org:org/demo-org"
        allowed = (await bot.get(f"{A}/iam/allowed-actions?resource={org_nrn}")).json
        assert "admin:org.read" in allowed["actions"] and "admin:org.update" not in allowed["actions"]
        # Granting through a narrowed token is bounded by the narrowing too.
        grant = await bot.post(
            f"{A}/users",
            {
                "id": "granted",
                "email": "granted@example.com",
                "org": "demo-org",
                "memberships": [{"org": "demo-org", "roles": ["NexusOrgAdmin"]}],
            },
        )
        assert grant.status == 403, grant
    finally:
        await bot.close()
    unknown = await admin.post(f"{A}/auth/tokens", {"policy": "no-such-policy"})
    assert (unknown.status, unknown.error) == (422, "invalid_field")


async def test_a_token_expires_and_dies_with_its_user(hub: RunningHub, admin: Client) -> None:
    for days in (0, 366, -3):
        ans = await admin.post(f"{A}/auth/tokens", {"expires_in_days": days})
        assert (ans.status, ans.error) == (422, "invalid_field"), ans
    # A token one second from its end (issued by the command the API uses).
    token = new_token("admin")
    spec = ApiTokenSpec(
        id="tok_short",
        user="admin",
        expires_at=dt.datetime.fromtimestamp(now_ms() / 1000 + 1.0, tz=dt.UTC),
    )
    secret = hmac_secret_of(hub.control.state, hub.server.settings.env)
    await hub.control.execute(
        IssueToken(
            id=uuid7(),
            actor="system:test",
            at_ms=now_ms(),
            spec=spec,
            hash=token_hash(token, secret),
            prefix=display_prefix(token),
        )
    )
    short = Client(hub.url, token)
    try:
        assert (await short.get(f"{A}/auth/me")).status == 200
        await asyncio.sleep(1.2)
        assert (await short.get(f"{A}/auth/me")).status == 401
    finally:
        await short.close()
    shown = (await admin.get(f"{A}/users/admin/tokens")).json["items"]
    assert [t["key"]["status"] for t in shown if t["id"] == "tok_short"] == ["expired"]
    # A user's token stops when the user is disabled, and an admin revokes it.
    ans = await admin.post(
        f"{A}/users",
        {
            "id": "ann",
            "email": "ann@example.com",
            "org": "demo-org",
            "memberships": [{"org": "demo-org", "roles": ["NexusViewer"]}],
        },
    )
    assert ans.status == 201
    assert (await admin.put(f"{A}/users/ann/password", {"password": PASSWORD})).status == 204
    ann = await sign_in(hub.url, "ann@example.com", PASSWORD)
    try:
        made = (await ann.post(f"{A}/auth/tokens", {})).json
        as_ann = Client(hub.url, made["token"])
        assert (await as_ann.get(f"{A}/orgs/demo-org")).status == 200
        assert (await admin.patch(f"{A}/users/ann", {"disabled": True})).status == 200
        assert (await as_ann.get(f"{A}/orgs/demo-org")).status == 401
        assert (await admin.patch(f"{A}/users/ann", {"disabled": False})).status == 200
        assert (await as_ann.get(f"{A}/orgs/demo-org")).status == 200
        assert (await admin.delete(f"{A}/users/ann/tokens/{made['item']['id']}")).status == 204
        assert (await as_ann.get(f"{A}/orgs/demo-org")).status == 401
        assert (await admin.delete(f"{A}/users/ann/tokens/nope")).status == 404
        await as_ann.close()
    finally:
        await ann.close()


async def test_scim_and_admin_tokens_are_not_interchangeable(hub: RunningHub, admin: Client) -> None:
    scim = await admin.post(f"{A}/scim-tokens", {"org": "demo-org", "expires_in_days": 10})
    assert scim.status == 201, scim
    assert scim.json["token"].startswith("nxscim_")
    listed = (await admin.get(f"{A}/scim-tokens?org=demo-org")).json["items"]
    assert [t["id"] for t in listed] == [scim.json["item"]["id"]]
    as_scim = Client(hub.url, scim.json["token"])
    adm = (await admin.post(f"{A}/auth/tokens", {})).json["token"]
    as_admin_token = Client(hub.url, adm)
    try:
        assert (await as_scim.get(f"{A}/auth/me")).status == 401
        ans = await as_admin_token.get("/scim/v2/Users")
        assert ans.status == 401 and ans.json["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
        assert (await as_scim.get("/scim/v2/Users")).status == 200
        assert (await admin.delete(f"{A}/scim-tokens/{scim.json['item']['id']}")).status == 204
        assert (await as_scim.get("/scim/v2/Users")).status == 401
    finally:
        await as_scim.close()
        await as_admin_token.close()
    bad = await admin.post(f"{A}/scim-tokens", {"org": "no-such-org"})
    assert (bad.status, bad.error) == (422, "invalid_field")
