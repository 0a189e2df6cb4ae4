"""The admin API against a real Hub (NATS, Postgres): sign-in, the error
shape, CRUD with versions, merge patches, keyset pages, the OpenAPI
document, and virtual keys (shown once, rotated, revoked, approved)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.hub.conftest import ADMIN_EMAIL, Answer, Client, RunningHub, sign_in

pytestmark = pytest.mark.integration

A = "/api/admin"


async def test_sign_in_gives_a_token_and_a_safe_cookie(hub: RunningHub) -> None:
    anon = Client(hub.url)
    try:
        bad = await anon.post(f"{A}/auth/login", {"email": ADMIN_EMAIL, "password": "wrong-password-123"})
        assert (bad.status, bad.error) == (401, "invalid_credentials")
        nobody = await anon.post(f"{A}/auth/login", {"email": "nobody@example.com", "password": "x" * 20})
        assert (nobody.status, nobody.error) == (401, "invalid_credentials")
        ok = await anon.post(
            f"{A}/auth/login", {"email": ADMIN_EMAIL.upper(), "password": hub.admin_password}
        )
        assert ok.status == 200 and ok.json["token"].startswith("nxs_")
        cookie = ok.headers["Set-Cookie"]
        assert "nexus_session=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
        assert "Path=/api/admin" in cookie
        assert ok.json["user"]["spec"]["email"] == ADMIN_EMAIL
        assert "password" not in ok.raw.decode().replace('"has_password"', "")
        # Without a token: 401 in the one error shape.
        denied = await anon.get(f"{A}/orgs")
        assert denied.status == 401 and denied.error == "unauthenticated"
        assert denied.json["error"]["request_id"] and denied.headers["WWW-Authenticate"].startswith("Bearer")
    finally:
        await anon.close()
    me = await sign_in(hub.url, ADMIN_EMAIL, hub.admin_password)
    try:
        who = await me.get(f"{A}/auth/me")
        assert who.status == 200 and who.json["policies"] == ["NexusSuperAdmin@*"]
        assert (await me.post(f"{A}/auth/logout")).status == 204
        # The session is gone at once.
        assert (await me.get(f"{A}/auth/me")).status == 401
    finally:
        await me.close()


async def test_a_session_cookie_alone_cannot_change_anything_without_the_csrf_token(hub: RunningHub) -> None:
    import aiohttp

    # unsafe: the jar keeps cookies of an IP-address host (the test Hub's)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        async with s.post(
            hub.url + f"{A}/auth/login", json={"email": ADMIN_EMAIL, "password": hub.admin_password}
        ) as r:
            assert r.status == 200
            csrf = (await r.json())["csrf_token"]
        async with s.get(hub.url + f"{A}/orgs") as r:
            assert r.status == 200  # reads work with the cookie
        async with s.post(hub.url + f"{A}/orgs", json={"id": "csrf"}) as r:
            assert r.status == 403 and (await r.json())["error"]["code"] == "csrf_required"
        async with s.post(hub.url + f"{A}/orgs", json={"id": "csrf"}, headers={"X-CSRF-Token": csrf}) as r:
            assert r.status == 201


async def test_bad_input_is_a_4xx_naming_the_field(admin: Client) -> None:
    cases: list[tuple[Answer, int, str, str | None]] = [
        (await admin.post(f"{A}/orgs", {"id": "x", "timezone": 5}), 422, "invalid_field", "timezone"),
        (await admin.post(f"{A}/orgs", {"id": "x", "bogus": 1}), 422, "invalid_field", "bogus"),
        (
            await admin.post(f"{A}/orgs", {"id": "x", "timezone": "Mars/Base"}),
            422,
            "invalid_field",
            "timezone",
        ),
        (await admin.post(f"{A}/orgs", {"id": "bad id!"}), 422, "invalid_field", "id"),
        (await admin.post(f"{A}/orgs", {"id": "x", "parent": "nope"}), 422, "invalid_field", "parent"),
        (await admin.call("POST", f"{A}/orgs", raw=b"{not json"), 400, "invalid_json", None),
        (await admin.post(f"{A}/projects", {"id": "p", "org": "nope"}), 422, "invalid_field", "org"),
        (
            await admin.post(
                f"{A}/virtual-keys",
                {"org": "demo-org", "project": "demo-project", "allowed_models": ["nope"]},
            ),
            422,
            "invalid_field",
            "allowed_models",
        ),
        (
            await admin.post(
                f"{A}/quotas", {"kind": "budget", "id": "q", "unit": "usd", "limit": -1, "window": "day"}
            ),
            422,
            "invalid_field",
            "limit",
        ),
        (await admin.get(f"{A}/orgs?limit=0"), 400, "invalid_query", "limit"),
        (await admin.get(f"{A}/orgs/nope"), 404, "not_found", None),
        (await admin.get(f"{A}/nothing-here"), 404, "not_found", None),
        (await admin.call("PATCH", f"{A}/orgs"), 405, "method_not_allowed", None),
        (
            await admin.call("POST", f"{A}/orgs", raw=b"{}", headers={"Content-Type": "text/plain"}),
            415,
            "unsupported_media_type",
            None,
        ),
    ]
    for ans, status, code, field in cases:
        assert (ans.status, ans.error) == (status, code), ans
        assert ans.json["error"].get("field") == field, ans
        assert "Traceback" not in ans.raw.decode()


async def test_versions_etags_and_one_conflict(admin: Client, hub: RunningHub) -> None:
    created = await admin.post(f"{A}/orgs", {"id": "acme", "name": "Acme", "timezone": "Europe/Paris"})
    assert created.status == 201
    v1 = created.json["version"]
    assert created.headers["ETag"] == f'"{v1}"'
    got = await admin.get(f"{A}/orgs/acme")
    assert got.json["spec"]["timezone"] == "Europe/Paris" and got.headers["ETag"] == f'"{v1}"'
    # Two edits based on the same version: one wins, the other is a 409
    # with the version now current.
    a, b = await asyncio.gather(
        admin.patch(f"{A}/orgs/acme", {"name": "Acme A"}, headers={"If-Match": f'"{v1}"'}),
        admin.patch(f"{A}/orgs/acme", {"metadata": {"tier": "gold"}}, headers={"If-Match": f'"{v1}"'}),
    )
    statuses = sorted([a.status, b.status])
    assert statuses == [200, 409], (a, b)
    loser = a if a.status == 409 else b
    winner = b if loser is a else a
    assert loser.error == "version_conflict"
    assert loser.json["error"]["current_version"] == winner.json["version"]
    # Nothing lost: the loser re-applies on the current version.
    retry_body = {"name": "Acme A"} if loser is a else {"metadata": {"tier": "gold"}}
    again = await admin.patch(
        f"{A}/orgs/acme", retry_body, headers={"If-Match": f'"{winner.json["version"]}"'}
    )
    assert again.status == 200
    final = (await admin.get(f"{A}/orgs/acme")).json["spec"]
    assert final["name"] == "Acme A" and final["metadata"] == {"tier": "gold"}
    # A PUT with an old version is refused too; without If-Match it applies.
    stale = await admin.put(f"{A}/orgs/acme", {"id": "acme"}, headers={"If-Match": f'"{v1}"'})
    assert stale.status == 409
    # A retried request (same Idempotency-Key) is applied once.
    key = {"Idempotency-Key": "retry-me-1"}
    first = await admin.post(f"{A}/orgs", {"id": "once"}, headers=key)
    second = await admin.post(f"{A}/orgs", {"id": "once"}, headers=key)
    assert first.status == 201 and second.status == 201
    assert first.json["version"] == second.json["version"]
    # Deleting what is still used names the user of it.
    in_use = await admin.delete(f"{A}/orgs/demo-org")
    assert (in_use.status, in_use.error) == (409, "in_use")


async def test_lists_page_by_id_with_filters(admin: Client) -> None:
    for i in range(7):
        assert (
            await admin.post(f"{A}/orgs", {"id": f"org-{i}", "parent": "demo-org" if i % 2 else None})
        ).status == 201
    seen: list[str] = []
    after = ""
    pages = 0
    while True:
        ans = await admin.get(f"{A}/orgs?limit=3&id_prefix=org-" + (f"&after={after}" if after else ""))
        assert ans.status == 200
        seen += [i["id"] for i in ans.json["items"]]
        pages += 1
        if ans.json["next"] is None:
            break
        after = ans.json["next"]
    assert seen == [f"org-{i}" for i in range(7)] and pages == 3
    children = await admin.get(f"{A}/orgs?parent=demo-org")
    assert [i["id"] for i in children.json["items"]] == ["org-1", "org-3", "org-5"]


async def test_virtual_keys_shown_once_rotated_and_revoked(admin: Client, hub: RunningHub) -> None:
    made = await admin.post(
        f"{A}/virtual-keys",
        {
            "org": "demo-org",
            "project": "demo-project",
            "allowed_models": ["gpt-4o-mini"],
            "description": "ci",
        },
    )
    assert made.status == 201, made
    key, item = made.json["key"], made.json["item"]
    assert key.startswith("nvk_") and item["key"]["status"] == "active" and item["key"]["prefix"] == key[:12]
    kid = item["id"]
    shown = await admin.get(f"{A}/virtual-keys/{kid}")
    assert key not in shown.raw.decode() and key[12:] not in shown.raw.decode()
    listed = await admin.get(f"{A}/virtual-keys?org=demo-org")
    assert kid in [i["id"] for i in listed.json["items"]] and key[12:] not in listed.raw.decode()
    rotated = await admin.post(f"{A}/virtual-keys/{kid}/rotate", {"grace_seconds": 300})
    assert rotated.status == 200 and rotated.json["key"] != key
    assert rotated.json["item"]["key"]["previous_key_valid_until"] is not None
    too_long = await admin.post(f"{A}/virtual-keys/{kid}/rotate", {"grace_seconds": 10**9})
    assert (too_long.status, too_long.json["error"]["field"]) == (422, "grace_seconds")
    revoked = await admin.post(f"{A}/virtual-keys/{kid}/revoke", {"reason": "rotated out"})
    assert revoked.json["key"]["status"] == "revoked"
    again = await admin.post(f"{A}/virtual-keys/{kid}/rotate", {})
    assert (again.status, again.error) == (409, "invalid_transition")
    # A key's org is fixed.
    moved = await admin.patch(f"{A}/virtual-keys/demo-key", {"org": "other"})
    assert (moved.status, moved.json["error"]["field"]) == (422, "org")
    assert (await admin.delete(f"{A}/virtual-keys/{kid}")).status == 204


async def test_the_openapi_document_describes_every_route(hub: RunningHub, admin: Client) -> None:
    anon = Client(hub.url)
    try:
        doc = (await anon.get("/openapi.json")).json
        health = await anon.get("/healthz")
        metrics = await anon.get("/metrics")
    finally:
        await anon.close()
    assert doc["openapi"] == "3.1.0"
    ops = [(m.upper(), p, op) for p, item in doc["paths"].items() for m, op in item.items()]
    assert len(ops) > 100
    ids = [op["operationId"] for _, _, op in ops]
    assert len(ids) == len(set(ids)), "operationIds must be unique"
    for method, path, op in ops:
        assert "x-nexus-action" in op and "x-nexus-mutating" in op, (method, path)
        assert op["x-nexus-mutating"] == (method != "GET")
    schemas = doc["components"]["schemas"]
    assert "KeySpec" in schemas and "ErrorDocument" in schemas
    assert set(schemas["KeySpec"]["properties"]) >= {"org", "project", "type", "allowed_models", "expires_at"}
    assert health.status == 200 and health.json["status"] == "ok"
    assert "nexus_hub_snapshot_revision" in metrics.raw.decode()
    assert (
        'nexus_hub_requests_total{method="POST",route="/api/admin/auth/login",status="200"}'
        in metrics.raw.decode()
    )
    assert "demo-org" not in health.raw.decode() + metrics.raw.decode()


async def test_two_admins_editing_one_key_at_once_get_exactly_one_conflict(
    hub: RunningHub, admin: Client
) -> None:
    """Must-show 6: both read the key (its version), both change it at once
    with If-Match; exactly one gets 409 with the current version, and after
    re-reading and re-applying, both changes are in the key."""
    second = {
        "id": "admin2",
        "email": "admin2@example.com",
        "policies": [{"policy": "NexusSuperAdmin", "org": ""}],
    }
    # (The first admin may grant what it holds; it may not grant itself.)
    assert (await admin.post(f"{A}/users", second)).status == 201
    assert (
        await admin.put(f"{A}/users/admin2/password", {"password": "another-strong-password"})
    ).status == 204
    other = await sign_in(hub.url, "admin2@example.com", "another-strong-password")
    try:
        made = await admin.post(f"{A}/virtual-keys", {"org": "demo-org", "project": "demo-project"})
        kid = made.json["item"]["id"]
        for round_ in range(5):
            a_view, b_view = await asyncio.gather(
                admin.get(f"{A}/virtual-keys/{kid}"), other.get(f"{A}/virtual-keys/{kid}")
            )
            assert a_view.headers["ETag"] == b_view.headers["ETag"]
            etag = a_view.headers["ETag"]
            a, b = await asyncio.gather(
                admin.patch(
                    f"{A}/virtual-keys/{kid}", {"description": f"a{round_}"}, headers={"If-Match": etag}
                ),
                other.patch(
                    f"{A}/virtual-keys/{kid}",
                    {"allowed_models": ["gpt-4o"], "metadata": {"r": round_}},
                    headers={"If-Match": etag},
                ),
            )
            assert sorted([a.status, b.status]) == [200, 409], (a, b)
            loser, body = (
                (a, {"description": f"a{round_}"})
                if a.status == 409
                else (b, {"allowed_models": ["gpt-4o"], "metadata": {"r": round_}})
            )
            client = admin if loser is a else other
            assert loser.error == "version_conflict" and loser.json["error"]["current_version"] > int(
                etag.strip('"')
            )
            current = await client.get(f"{A}/virtual-keys/{kid}")
            assert (
                await client.patch(
                    f"{A}/virtual-keys/{kid}", body, headers={"If-Match": current.headers["ETag"]}
                )
            ).status == 200
            spec = (await admin.get(f"{A}/virtual-keys/{kid}")).json["spec"]
            assert spec["description"] == f"a{round_}" and spec["metadata"] == {"r": round_}
            assert spec["allowed_models"] == ["gpt-4o"]
    finally:
        await other.close()


async def test_the_simulator_explains_and_allowed_actions_lists_exactly(admin: Client) -> None:
    """POST iam/simulate answers the decision, the statement that decided,
    those that matched and the context keys a condition wanted but did not
    get; GET iam/allowed-actions lists exactly what the caller may do at an
    NRN."""
    org = "nrn:nexus:iam:acme:org/acme"
    office = {
        "Sid": "UpdateFromTheOffice",
        "Effect": "Allow",
        "Action": "admin:org.update",
        "Resource": org,
        "Condition": {"IpAddress": {"nexus:SourceIp": "10.0.0.0/8"}},
    }
    statements: list[dict[str, Any]] = [
        {"Sid": "ReadAcme", "Effect": "Allow", "Action": "admin:org.read", "Resource": org},
        office,
        {"Sid": "AlsoDelete", "Effect": "Allow", "Action": "admin:org.delete", "Resource": org},
        {"Sid": "NeverDelete", "Effect": "Deny", "Action": "admin:org.delete", "Resource": org},
    ]

    def document(stmts: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": "acme-ops", "org": "acme", "document": {"Version": "2026-01-01", "Statement": stmts}}

    assert (await admin.post(f"{A}/orgs", {"id": "acme"})).status == 201
    assert (await admin.post(f"{A}/policies", document(statements))).status == 201
    assert (
        await admin.post(f"{A}/users", {"id": "ann", "email": "ann@example.com", "org": "acme"})
    ).status == 201
    attach = {"principal": "user/ann", "org": "acme"}
    assert (await admin.post(f"{A}/policies/acme-ops/attach", attach)).status == 200

    async def simulate(action: str, context: dict[str, Any] | None = None) -> dict[str, Any]:
        body = {"principal": "ann", "action": action, "resource": org, "context": context or {}}
        ans = await admin.post(f"{A}/iam/simulate", body)
        assert ans.status == 200, ans
        assert ans.json["principal"] == "nrn:nexus:iam:acme:user/ann"
        return dict(ans.json["decision"])

    def sids(d: dict[str, Any]) -> set[str]:
        return {m["sid"] for m in d["matched"]}

    read = await simulate("admin:org.read")
    assert (read["outcome"], read["deciding"]["sid"], sids(read)) == ("allowed", "ReadAcme", {"ReadAcme"})
    # An explicit deny wins over the allow beside it, and says so.
    delete = await simulate("admin:org.delete")
    assert (delete["outcome"], delete["allowed"], delete["deciding"]["sid"]) == (
        "explicit_deny",
        False,
        "NeverDelete",
    )
    assert "NeverDelete" in sids(delete)
    # A condition without its key: the key is named as missing.
    update = await simulate("admin:org.update")
    assert (update["outcome"], update["matched"]) == ("implicit_deny", [])
    assert [k.lower() for k in update["missing_context_keys"]] == ["nexus:sourceip"], update
    inside = await simulate("admin:org.update", {"nexus:SourceIp": "10.1.2.3"})
    assert (inside["outcome"], sids(inside), inside["missing_context_keys"]) == (
        "allowed", {"UpdateFromTheOffice"}, []
    )  # fmt: skip
    outside = await simulate("admin:org.update", {"nexus:SourceIp": "192.0.2.1"})
    assert (outside["outcome"], outside["matched"]) == ("implicit_deny", [])
    # An action nothing speaks of: implicit deny, nothing matched.
    keys = await simulate("admin:virtual-key.create")
    assert (keys["outcome"], keys["matched"], keys["deciding"]) == ("implicit_deny", [], None)
    bad = await admin.post(f"{A}/iam/simulate", {"principal": "ann", "action": "org.read", "resource": org})
    assert (bad.status, bad.json["error"]["field"]) == (422, "action"), bad
    # allowed-actions, asked by ann herself (from loopback: not the office):
    # read only; with the deny gone, delete too.
    assert (await admin.put(f"{A}/users/ann/password", {"password": "ann-has-a-long-password"})).status == 204
    ann = await sign_in(admin.base, "ann@example.com", "ann-has-a-long-password")
    try:
        mine = await ann.get(f"{A}/iam/allowed-actions?resource={org}")
        assert (mine.status, mine.json["actions"]) == (200, ["admin:org.read"]), mine
        assert (await admin.put(f"{A}/policies/acme-ops", document(statements[:3]))).status == 200
        mine = await ann.get(f"{A}/iam/allowed-actions?resource={org}")
        assert sorted(mine.json["actions"]) == ["admin:org.delete", "admin:org.read"], mine
        elsewhere = await ann.get(f"{A}/iam/allowed-actions?resource=nrn:nexus:iam:globex:org/globex")
        assert (elsewhere.status, elsewhere.json["actions"]) == (200, [])
    finally:
        await ann.close()
