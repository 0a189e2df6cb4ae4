"""Must-show 7: every mutating admin route writes exactly one audit record
(routes enumerated from the OpenAPI document), allowed or denied, into the
hash chain the audit processor keeps in Postgres; ``nexus audit verify``
passes over it; GET /api/admin/audit reads it back, filtered by org."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import msgspec
import pytest
from nats.aio.client import Client as NATS

from processors.audit import AuditProcessor
from streams.topology import Topology
from tests.hub.conftest import ADMIN_EMAIL, Client, RunningHub, sign_in
from tests.hub.test_iam_matrix import (
    GLOBAL,
    GLOBAL_KINDS,
    PASSWORD,
    SPECIAL,
    TEMPLATES,
    World,
    expected,
    principals,  # noqa: F401 - a fixture
    settings_template,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

A = "/api/admin"


@pytest.fixture
async def audit(nc: NATS, topology: Topology, pg_dsn: str) -> AsyncIterator[AuditProcessor]:
    proc = AuditProcessor(nc, pg_dsn, topology, consumer="hub_test_audit")
    await proc.start()
    yield proc
    await proc.stop()


async def _records(dsn: str) -> list[dict[str, object]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT n, request_id, content FROM audit_log WHERE event_type = 'admin.action' ORDER BY n"
        )
    finally:
        await conn.close()
    return [
        {"n": r["n"], "request_id": r["request_id"], **msgspec.json.decode(r["content"])["event"]}
        for r in rows
    ]


async def test_every_mutating_route_writes_exactly_one_audit_record(
    hub: RunningHub,
    principals: tuple[World, dict[str, Client]],  # noqa: F811
    audit: AuditProcessor,
    nc: NATS,
    topology: Topology,
    pg_dsn: str,
) -> None:
    world, clients = principals
    admin, viewer = clients[GLOBAL], clients["NexusViewer"]
    doc = (await admin.get("/openapi.json")).json
    mutating = [
        (m.upper(), p, op["x-nexus-action"])
        for p, item in doc["paths"].items()
        for m, op in item.items()
        if op["x-nexus-mutating"]
    ]
    assert len(mutating) > 60
    sent: dict[str, tuple[str, str, str, int]] = {}  # request id -> (method, route, who, status)
    for method, path, action in mutating:
        if path.startswith(f"{A}/settings/"):
            TEMPLATES.setdefault((method, path), settings_template(method, path))
        if (method, path) == ("POST", f"{A}/auth/login"):
            c = Client(hub.url)
            ans = await c.post(path, {"email": ADMIN_EMAIL, "password": hub.admin_password})
            await c.close()
            sent[ans.headers["X-Request-Id"]] = (method, path, "anonymous", ans.status)
            bad = Client(hub.url)
            ans = await bad.post(path, {"email": ADMIN_EMAIL, "password": "not-the-password"})
            await bad.close()
            sent[ans.headers["X-Request-Id"]] = (method, path, "anonymous", ans.status)
            continue
        if (method, path) == ("POST", f"{A}/auth/logout"):
            c = await sign_in(hub.url, ADMIN_EMAIL, hub.admin_password)
            ans = await c.post(path)
            await c.close()
            sent[ans.headers["X-Request-Id"]] = (method, path, GLOBAL, ans.status)
            continue
        if (method, path) in (("DELETE", f"{A}/auth/sessions"), ("DELETE", f"{A}/auth/sessions/{{sid}}")):
            # Ending one's own sessions: a user of its own (the test's
            # clients keep theirs).
            uid = await world.target("users", "own", True)
            sid = await world.session_of(uid)
            c = await sign_in(hub.url, f"{uid}@example.com", PASSWORD)
            ans = await c.delete(path.replace("{sid}", sid))
            await c.close()
            assert ans.status in (200, 204), ans
            sent[ans.headers["X-Request-Id"]] = (method, path, "self", ans.status)
            continue
        if (method, path) in (("POST", f"{A}/auth/tokens"), ("DELETE", f"{A}/auth/tokens/{{tid}}")):
            # One's own API tokens: self-service, like one's own sessions.
            uid = await world.target("users", "own", True)
            tid = await world.token_of(uid) if method == "DELETE" else ""
            await world.ok(admin.put(f"{A}/users/{uid}/password", {"password": PASSWORD}))
            c = await sign_in(hub.url, f"{uid}@example.com", PASSWORD)
            ans = await c.call(method, path.replace("{tid}", tid), {} if method == "POST" else None)
            await c.close()
            assert ans.status in (201, 204), ans
            sent[ans.headers["X-Request-Id"]] = (method, path, "self", ans.status)
            continue
        assert (method, path) in TEMPLATES or (method, path) in SPECIAL, path
        kind = path.removeprefix(f"{A}/").split("/")[0]
        target = (
            "global"
            if kind in GLOBAL_KINDS or kind in ("settings", "config", "jobs", "kill-switch")
            else "own"
        )
        # Once allowed (the global admin, a fresh target), once denied (a
        # viewer may change nothing).
        for who, client in ((GLOBAL, admin), ("NexusViewer", viewer)):
            allow = expected(who, action, target)
            url, body = await TEMPLATES[(method, path)](world, target, allow)
            ans = await client.call(method, url, body)
            assert (200 <= ans.status < 300) if allow else ans.status == 403, (who, method, path, ans)
            sent[ans.headers["X-Request-Id"]] = (method, path, who, ans.status)
    # Everything the Hub published on the ADMIN stream is chained.
    info = await nc.jetstream().stream_info(topology.admin_stream)
    await asyncio.wait_for(audit.wait_for(topology.admin_stream, info.state.last_seq), 60)
    records = await _records(pg_dsn)
    per_request = Counter(str(r["request_id"]) for r in records)
    missing = [rid for rid in sent if per_request[rid] == 0]
    doubled = [rid for rid in sent if per_request[rid] > 1]
    assert not missing and not doubled, (missing[:5], doubled[:5])
    by_id = {str(r["request_id"]): r for r in records}
    for rid, (method, route, who, status) in sent.items():
        r = by_id[rid]
        assert (r["method"], r["route"], r["status"]) == (method, route, status), r
        if status == 403:
            assert r["decision"] in ("implicit_deny", "explicit_deny"), r
            assert r["resource"].startswith("nrn:nexus:"), r
        elif route == "/api/agents/enrol":
            # Public: the enrolment token is the credential, whoever sends it.
            assert r["decision"] == "enrolment_token" and r["action"] == "agent:enrol", r
        elif who == GLOBAL and route != f"{A}/auth/logout":
            assert r["decision"] == "allowed" and r["deciding_policy"].startswith("NexusSuperAdmin"), r
        assert r["source_ip"] == "127.0.0.1"
    login_fail = [r for r in records if r.get("action") == "auth:login" and r["status"] == 401]
    assert login_fail and login_fail[0]["actor_name"] == ADMIN_EMAIL
    # A change names its command and CONFIG position, and digests of the
    # item before and after (not the item itself).
    changed = [r for r in records if r.get("config_seq")]
    assert changed and all(
        r["command_id"] and (r.get("after_sha256") or r.get("before_sha256")) for r in changed
    )
    # The chain holds: `nexus audit verify` says so.
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "nexus.cli", "audit", "verify", "--dsn", pg_dsn],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # And the API reads it back: an org's auditor sees that org's records.
    auditor = clients["NexusAuditor"]
    page = await auditor.get(f"{A}/audit?org=acme&limit=5")
    assert page.status == 200 and len(page.json["items"]) == 5
    assert all(i["event"]["type"] == "admin.action" for i in page.json["items"])
    ns = [i["n"] for i in page.json["items"]]
    assert ns == sorted(ns, reverse=True)
    nxt = await auditor.get(f"{A}/audit?org=acme&limit=5&after={page.json['next']}")
    assert max(i["n"] for i in nxt.json["items"]) < min(ns)
    assert (await auditor.get(f"{A}/audit?org=globex")).status == 403
    denied = await admin.get(f"{A}/audit?decision=implicit_deny&limit=500")
    assert {i["event"]["decision"] for i in denied.json["items"]} == {"implicit_deny"}
