"""SCIM 2.0 (/scim/v2/Users and /Groups) against a real Hub over HTTP: its
own bearer auth (refused without it, with an admin credential, with
another org's token), the RFC 7644 shapes (ListResponse, Error, PatchOp,
filters, pagination), provisioning and deprovisioning; and must-show 2's
SCIM part: a deprovisioned user's session and personal key stop working
on real gateway nodes fed by the Hub within 2 s (measured and printed)."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest

from tests.hub.conftest import Answer, Client, RunningHub, sign_in
from tests.hub.live import chat_status
from tests.hub.test_live_config import Live, live, sim  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

A = "/api/admin"
S = "/scim/v2"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SCIM_JSON = {"Content-Type": "application/scim+json"}


async def _scim_client(hub: RunningHub, admin: Client, org: str) -> Client:
    ans = await admin.post(f"{A}/scim-tokens", {"org": org, "description": "idp"})
    assert ans.status == 201, ans
    return Client(hub.url, ans.json["token"])


async def _post(c: Client, path: str, body: Any) -> Answer:
    return await c.call("POST", path, body, headers=SCIM_JSON)


def _user_doc(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "schemas": [USER],
        "userName": f"{name}@example.com",
        "name": {"givenName": name.title(), "familyName": "Doe"},
        "externalId": f"ext-{name}",
        "active": True,
        **extra,
    }


def _is_error(ans: Answer, status: int, scim_type: str = "") -> bool:
    doc = ans.json
    return (
        ans.status == status
        and doc["schemas"] == [ERROR]
        and doc["status"] == str(status)
        and (not scim_type or doc.get("scimType") == scim_type)
    )


async def test_scim_refuses_callers_without_its_own_bearer_token(hub: RunningHub, admin: Client) -> None:
    anon = Client(hub.url)
    wrong = Client(hub.url, "nxscim_" + "0" * 64)
    try:
        for c in (anon, wrong, admin):  # admin: a session token is no SCIM credential
            for method, path in (("GET", f"{S}/Users"), ("POST", f"{S}/Users"), ("GET", f"{S}/Groups")):
                ans = await c.call(method, path, _user_doc("x") if method == "POST" else None)
                assert _is_error(ans, 401), (method, path, ans)
                assert ans.headers["WWW-Authenticate"].startswith("Bearer")
                assert ans.headers["Content-Type"].startswith("application/scim+json")
        assert _is_error(await anon.get(f"{S}/Nothing"), 404)
    finally:
        await anon.close()
        await wrong.close()


async def test_users_and_groups_are_provisioned_listed_patched_and_deleted(
    hub: RunningHub, admin: Client
) -> None:
    assert (await admin.post(f"{A}/orgs", {"id": "other-org"})).status == 201
    idp = await _scim_client(hub, admin, "demo-org")
    other = await _scim_client(hub, admin, "other-org")
    try:
        made = await _post(idp, f"{S}/Users", _user_doc("ada"))
        assert made.status == 201, made
        ada = made.json
        assert ada["schemas"] == [USER] and ada["userName"] == "ada@example.com" and ada["active"] is True
        assert ada["name"]["formatted"] == "Ada Doe" and ada["externalId"] == "ext-ada"
        assert ada["meta"]["resourceType"] == "User" and made.headers["ETag"].startswith('W/"')
        uid = ada["id"]
        # The Hub holds it as a user of the token's org.
        user = (await admin.get(f"{A}/users/{uid}")).json["spec"]
        assert (user["org"], user["email"], user["disabled"]) == ("demo-org", "ada@example.com", False)
        # Unique userName (case-insensitive), filters, pagination.
        assert _is_error(await _post(idp, f"{S}/Users", _user_doc("ADA")), 409, "uniqueness")
        assert (await _post(idp, f"{S}/Users", _user_doc("bob"))).status == 201
        found = (await idp.get(f'{S}/Users?filter=userName eq "Ada@Example.com"')).json
        assert found["schemas"] == [LIST] and found["totalResults"] == 1
        assert found["Resources"][0]["id"] == uid
        assert (await idp.get(f'{S}/Users?filter=externalId eq "ext-bob"')).json["totalResults"] == 1
        page = (await idp.get(f"{S}/Users?startIndex=2&count=1")).json
        assert (page["totalResults"], page["startIndex"], page["itemsPerPage"]) == (2, 2, 1)
        assert _is_error(await idp.get(f'{S}/Users?filter=userName co "a"'), 400, "invalidFilter")
        # Another org's token sees none of it.
        assert (await other.get(f"{S}/Users")).json["totalResults"] == 0
        assert _is_error(await other.get(f"{S}/Users/{uid}"), 404)
        # Groups: members are users of the org.
        group = await _post(
            idp, f"{S}/Groups", {"schemas": [GROUP], "displayName": "Engineers", "members": [{"value": uid}]}
        )
        assert group.status == 201, group
        gid = group.json["id"]
        assert [m["value"] for m in group.json["members"]] == [uid]
        assert (await idp.get(f"{S}/Users/{uid}")).json["groups"] == [{"value": gid, "display": "Engineers"}]
        bob = (await idp.get(f'{S}/Users?filter=userName eq "bob@example.com"')).json["Resources"][0]["id"]
        add = await idp.call(
            "PATCH",
            f"{S}/Groups/{gid}",
            {"schemas": [PATCH], "Operations": [{"op": "add", "path": "members", "value": [{"value": bob}]}]},
            headers=SCIM_JSON,
        )
        assert add.status == 200 and {m["value"] for m in add.json["members"]} == {uid, bob}
        remove = await idp.call(
            "PATCH",
            f"{S}/Groups/{gid}",
            {"schemas": [PATCH], "Operations": [{"op": "remove", "path": f'members[value eq "{bob}"]'}]},
            headers=SCIM_JSON,
        )
        assert [m["value"] for m in remove.json["members"]] == [uid]
        stranger = await _post(other, f"{S}/Users", _user_doc("eve"))
        bad_member = await _post(
            idp,
            f"{S}/Groups",
            {"schemas": [GROUP], "displayName": "X", "members": [{"value": stranger.json["id"]}]},
        )
        assert _is_error(bad_member, 400, "invalidValue")
        # SCIM gives a group members, never rights.
        assert (await admin.get(f"{A}/groups/{gid}")).json["spec"]["roles"] == []
        # PUT replaces, PATCH without a path (Entra ID's string booleans too).
        put = await idp.call(
            "PUT", f"{S}/Users/{uid}", _user_doc("ada", displayName="Ada L."), headers=SCIM_JSON
        )
        assert put.status == 200 and put.json["userName"] == "ada@example.com"
        off = await idp.call(
            "PATCH",
            f"{S}/Users/{bob}",
            {"schemas": [PATCH], "Operations": [{"op": "Replace", "value": {"active": "False"}}]},
            headers=SCIM_JSON,
        )
        assert off.status == 200 and off.json["active"] is False
        assert (await admin.get(f"{A}/users/{bob}")).json["spec"]["disabled"] is True
        # Bad input: a clear 4xx in SCIM's shape, never a 500.
        for body, status in (
            ({"schemas": [USER]}, 400),
            ({"schemas": [USER], "userName": 42}, 400),
            ({"schemas": [USER], "userName": "not-an-email"}, 400),
            ({"schemas": [USER], "userName": "z@example.com", "active": "maybe"}, 400),
        ):
            assert _is_error(await _post(idp, f"{S}/Users", body), status), body
        broken = await idp.call("POST", f"{S}/Users", raw=b"{nope", headers=SCIM_JSON)
        assert _is_error(broken, 400, "invalidSyntax")
        no_ops = await idp.call("PATCH", f"{S}/Users/{uid}", {"schemas": [PATCH]}, headers=SCIM_JSON)
        assert _is_error(no_ops, 400)
        # DELETE: gone for SCIM, kept disabled in the Hub, out of its groups.
        assert (await idp.delete(f"{S}/Users/{uid}")).status == 204
        assert _is_error(await idp.get(f"{S}/Users/{uid}"), 404)
        kept = (await admin.get(f"{A}/users/{uid}")).json["spec"]
        assert kept["disabled"] is True
        assert (await idp.get(f"{S}/Groups/{gid}")).json["members"] == []
        # Provisioned again: the same account comes back.
        again = await _post(idp, f"{S}/Users", _user_doc("ada"))
        assert again.status == 201 and again.json["id"] == uid and again.json["active"] is True
        assert (await idp.delete(f"{S}/Groups/{gid}")).status == 204
        assert _is_error(await idp.get(f"{S}/Groups/{gid}"), 404)
    finally:
        await idp.close()
        await other.close()


@pytest.mark.slow
async def test_deprovisioning_kills_sessions_and_personal_keys_within_2s(
    live: Live,  # noqa: F811 - the fixture imported above
    hub: RunningHub,
) -> None:
    """Must-show 2, SCIM part: on two gateway processes fed by the Hub."""
    admin = live.admin
    idp = await _scim_client(hub, admin, "demo-org")
    password = "a-long-enough-password-42"
    try:
        made = await _post(idp, f"{S}/Users", _user_doc("leaver"))
        uid = made.json["id"]
        assert (
            await admin.patch(
                f"{A}/users/{uid}",
                {
                    "memberships": [{"org": "demo-org", "roles": ["NexusDeveloper"]}],
                    "projects": ["demo-project"],
                },
            )
        ).status == 200
        assert (await admin.put(f"{A}/users/{uid}/password", {"password": password})).status == 204
        session = await sign_in(hub.url, "leaver@example.com", password)
        key = await admin.post(
            f"{A}/virtual-keys",
            {"org": "demo-org", "project": "demo-project", "type": "personal", "owner": uid},
        )
        assert key.status == 201, key
        secret = key.json["key"]
        async with aiohttp.ClientSession() as http:
            for node in live.nodes:
                deadline = time.monotonic() + 10
                while await chat_status(http, node, secret) != 200:
                    assert time.monotonic() < deadline, "the key never served"
            assert (await session.get(f"{A}/auth/me")).status == 200
            t0 = time.monotonic()
            off = await idp.call(
                "PATCH",
                f"{S}/Users/{uid}",
                {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": False}]},
                headers=SCIM_JSON,
            )
            answered = time.monotonic() - t0
            assert off.status == 200, off
            session_dead = key_dead = 0.0
            pending = set(range(len(live.nodes)))
            while True:
                now = time.monotonic() - t0
                if not session_dead and (await session.get(f"{A}/auth/me")).status == 401:
                    session_dead = time.monotonic() - t0
                for i in list(pending):
                    if await chat_status(http, live.nodes[i], secret) == 401:
                        pending.discard(i)
                if not pending and not key_dead:
                    key_dead = time.monotonic() - t0
                if session_dead and key_dead:
                    break
                assert now < 10, f"still alive after 10 s: session {session_dead}, nodes {pending}"
        await session.close()
        print(
            f"\nmust-show 2 (SCIM): deprovisioned (PATCH active=false answered in {answered * 1000:.0f} ms); "
            f"session refused {session_dead * 1000:.0f} ms, personal key refused by both gateway nodes "
            f"{key_dead * 1000:.0f} ms after the request"
        )
        assert session_dead < 2.0 and key_dead < 2.0
        # The session store holds none of the user's sessions any more.
        assert (await admin.get(f"{A}/users/{uid}/sessions")).json["items"] == []
    finally:
        await idp.close()


async def test_no_input_makes_scim_fail(hub: RunningHub, admin: Client) -> None:
    """Seeded random bodies, ids, filters and patch operations on every SCIM
    route: always a 4xx (or a success) in SCIM's shapes, never a 500."""
    import random

    from tests.hub.test_api_fuzz import value

    rng = random.Random(20261207)
    idp = await _scim_client(hub, admin, "demo-org")
    try:
        uid = (await _post(idp, f"{S}/Users", _user_doc("fuzz"))).json["id"]
        gid = (await _post(idp, f"{S}/Groups", {"schemas": [GROUP], "displayName": "F"})).json["id"]
        attrs = ["userName", "active", "name", "displayName", "externalId", "members", "emails", "schemas"]
        paths = ["active", "userName", "members", 'members[value eq "x"]', "name.givenName", "", "nope", 42]
        filters = ['userName eq "a"', "userName eq", 'bogus eq "x"', 'userName sw "a"', "((", '"', "x" * 3000]
        sent = 0
        for i in range(400):
            target = rng.choice(["Users", "Groups"])
            rid = rng.choice([uid, gid, "nope", "%2e%2e", "x" * 200])
            method = rng.choice(["GET", "POST", "PUT", "PATCH", "DELETE"])
            if method in ("POST", "GET") and rng.random() < 0.5:
                path = f"{S}/{target}"
            else:
                path = f"{S}/{target}/{rid}"
            if method == "GET" and rng.random() < 0.5:
                path += f"?filter={rng.choice(filters)}&startIndex={rng.choice(['0', '-5', 'x', '2'])}"
            body: Any = None
            if method in ("POST", "PUT"):
                body = {rng.choice(attrs): value(rng) for _ in range(rng.randrange(1, 5))}
            elif method == "PATCH":
                ops = [
                    {
                        "op": rng.choice(["add", "replace", "remove", "x", 1]),
                        "path": rng.choice(paths),
                        "value": value(rng),
                    }
                    for _ in range(rng.randrange(0, 3))
                ]
                body = {"schemas": rng.choice([[PATCH], [], "x"]), "Operations": rng.choice([ops, "x", None])}
            if method == "DELETE" and rid in (uid, gid) and i < 350:
                continue  # keep the targets for the other cases
            ans = await idp.call(method, path, body, headers=SCIM_JSON)
            sent += 1
            assert ans.status < 500, (method, path, body, ans)
            if ans.status >= 400:
                assert ans.json["schemas"] == [ERROR], ans
        assert sent > 300
    finally:
        await idp.close()
