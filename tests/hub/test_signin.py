"""Must-show 2 (sign-in half): login throttling per IP and per login name,
lockout after consecutive failures (audited, lifted by time or an admin),
the same answers for unknown e-mails, transparent re-hashing of weak
password hashes, cookie flags (HttpOnly, SameSite=Lax, Secure under real
TLS and behind a trusted proxy saying https), CSRF refusal of
cookie-authenticated writes, idle and absolute session timeouts, and
server-side revocation (logout, sign out everywhere, an admin's), seen by a
second Hub replica within its cache bound.  Real NATS, real Hub processes'
code over real HTTP(S)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import ssl
import statistics
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from nats.aio.client import Client as NATS

from hub.commands import SetPassword
from hub.service import HubServer, HubSettings
from hub.signin.kv import Bucket
from hub.signin.sessions import KvSessionStore, Session
from streams.events import now_ms, uuid7
from streams.events_admin import AdminAction
from streams.topology import Topology
from tests.hub.conftest import ADMIN_EMAIL, Answer, Client, RunningHub, sign_in
from tests.siem.receivers import self_signed

pytestmark = pytest.mark.integration

A = "/api/admin"
PASSWORD = "a-long-enough-password-42"


async def _user(admin: Client, uid: str, **extra: Any) -> str:
    email = f"{uid}@example.com"
    ans = await admin.post(f"{A}/users", {"id": uid, "email": email, "org": "demo-org", **extra})
    assert ans.status == 201, ans
    ans = await admin.put(f"{A}/users/{uid}/password", {"password": PASSWORD})
    assert ans.status == 204, ans
    return email


async def _settings(admin: Client, **changes: Any) -> None:
    current = (await admin.get(f"{A}/settings/signin")).json
    ans = await admin.put(f"{A}/settings/signin", {**current, **changes})
    assert ans.status == 200, ans


async def _login(url: str, email: str, password: str, headers: dict[str, str] | None = None) -> Answer:
    anon = Client(url)
    try:
        return await anon.post(f"{A}/auth/login", {"email": email, "password": password}, headers=headers)
    finally:
        await anon.close()


async def _admin_records(nc: NATS, topology: Topology) -> list[AdminAction]:
    js = nc.jetstream()
    info = await js.stream_info(topology.admin_stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(topology.admin_stream, seq)
        if msg.subject != topology.admin_subject("admin.action"):
            continue  # the scheduler's admin.job_run records share the stream
        out.append(msgspec.json.decode(msg.data, type=AdminAction))
    return out


# --- throttling and lockout ------------------------------------------------------------


async def test_login_is_throttled_per_login_name_and_per_ip_alike_for_unknown_names(
    hub: RunningHub, admin: Client
) -> None:
    email = await _user(admin, "thr")
    await _settings(
        admin, login_burst=3, login_per_minute=1.0, ip_burst=10, ip_per_minute=1.0, lockout_failures=0
    )
    for name in (email, "nobody-here@example.com"):
        answers = [await _login(hub.url, name, "wrong-password-000") for _ in range(3)]
        assert [a.error for a in answers] == ["invalid_credentials"] * 3
        throttled = await _login(hub.url, name, PASSWORD)  # even the right password: not checked
        assert (throttled.status, throttled.error) == (429, "rate_limited"), throttled
        assert 1 <= int(throttled.headers["Retry-After"]) <= 60
    # The IP's bucket (10) is spent across names: 8 taken above, 2 left.
    others = [await _login(hub.url, f"spray{i}@example.com", "wrong-password-000") for i in range(3)]
    assert [a.status for a in others] == [401, 401, 429], others
    assert others[2].error == "rate_limited"


async def test_lockout_after_consecutive_failures_is_audited_and_ends_by_itself(
    hub: RunningHub, admin: Client, nc: NATS, topology: Topology
) -> None:
    email = await _user(admin, "lock")
    await _settings(admin, lockout_failures=3, lockout_seconds=2, login_burst=100, ip_burst=100)
    # A right password between failures resets the count.
    for _ in range(2):
        assert (await _login(hub.url, email, "wrong-password-000")).status == 401
    assert (await _login(hub.url, email, PASSWORD)).status == 200
    seen: dict[str, list[tuple[int, str]]] = {}
    for name in (email, "ghost@example.com"):
        answers = [await _login(hub.url, name, "wrong-password-000") for _ in range(3)]
        answers.append(await _login(hub.url, name, PASSWORD if name == email else "whatever-password"))
        seen[name] = [(a.status, a.error) for a in answers]
    # The same answers for a real account and an e-mail nobody has.
    assert (
        seen[email] == seen["ghost@example.com"] == [(401, "invalid_credentials")] * 3 + [(429, "locked_out")]
    )
    await asyncio.sleep(2.2)
    assert (await _login(hub.url, email, PASSWORD)).status == 200
    # The failure that started the lockout says so in the audit trail; the
    # refusals while locked are recorded as such.
    assert hub.server.audit is not None and await hub.server.audit.flush(10)
    records = [r for r in await _admin_records(nc, topology) if r.action == "auth:login"]
    started = [r for r in records if r.deciding_statement.startswith("lockout: 3 wrong passwords")]
    assert {r.actor_name for r in started} == {email, "ghost@example.com"}
    locked = [r for r in records if r.decision == "locked_out"]
    assert len(locked) == 2 and all(r.status == 429 for r in locked)


async def test_an_admin_lifts_a_lockout(hub: RunningHub, admin: Client) -> None:
    email = await _user(admin, "unl")
    await _settings(admin, lockout_failures=2, lockout_seconds=3600, login_burst=100, ip_burst=100)
    for _ in range(2):
        await _login(hub.url, email, "wrong-password-000")
    assert (await _login(hub.url, email, PASSWORD)).error == "locked_out"
    assert (await admin.post(f"{A}/users/unl/unlock")).status == 204
    assert (await _login(hub.url, email, PASSWORD)).status == 200


async def test_wrong_passwords_take_as_long_for_unknown_e_mails(hub: RunningHub, admin: Client) -> None:
    email = await _user(admin, "tim")
    await _settings(admin, lockout_failures=0, login_burst=100, ip_burst=100)

    async def took(name: str) -> float:
        t = time.perf_counter()
        ans = await _login(hub.url, name, "wrong-password-000")
        assert ans.error == "invalid_credentials"
        return time.perf_counter() - t

    known, unknown = [], []
    for _ in range(5):
        known.append(await took(email))
        unknown.append(await took("not-a-user@example.com"))
    k, u = statistics.median(known), statistics.median(unknown)
    print(f"wrong password: known e-mail {k * 1000:.0f} ms, unknown {u * 1000:.0f} ms (medians of 5)")
    # Both pay one scrypt of today's cost; a missing check would be ~100x faster.
    assert 0.5 < k / u < 2.0


async def test_a_weak_password_hash_is_upgraded_at_sign_in(hub: RunningHub, admin: Client) -> None:
    email = await _user(admin, "weak")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(PASSWORD.encode(), salt=salt, n=2**12, r=8, p=1, dklen=32)
    weak = f"scrypt${2**12}$8$1${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    await hub.control.execute(
        SetPassword(id=uuid7(), actor="system:test", at_ms=now_ms(), rid="weak", password_hash=weak)
    )
    before = hub.control.state.seq
    assert (await _login(hub.url, email, PASSWORD)).status == 200
    stored = hub.control.state.get("user", "weak")
    assert stored is not None and stored.version > before
    assert stored.password_hash.startswith(f"scrypt${2**15}$8$3$")
    # The new hash holds the same password.
    assert (await _login(hub.url, email, PASSWORD)).status == 200
    assert hub.control.state.get("user", "weak").version == stored.version  # type: ignore[union-attr]


async def test_password_sign_in_can_be_turned_off(hub: RunningHub, admin: Client) -> None:
    email = await _user(admin, "sso")
    await _settings(admin, password_login=False)
    ans = await _login(hub.url, email, PASSWORD)
    assert (ans.status, ans.error) == (403, "access_denied")
    assert "identity provider" in ans.json["error"]["message"]


# --- cookies and CSRF -------------------------------------------------------------------


def _cookies(resp_headers: Any) -> dict[str, str]:
    return {c.split("=", 1)[0]: c for c in resp_headers.getall("Set-Cookie")}


async def test_session_cookies_are_httponly_lax_and_not_secure_over_plain_http(hub: RunningHub) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(hub.url + f"{A}/auth/login", json={"email": ADMIN_EMAIL, "password": hub.admin_password}) as r,
    ):
        assert r.status == 200
        cookies = _cookies(r.headers)
        body = await r.json()
    session, csrf = cookies["nexus_session"], cookies["nexus_csrf"]
    assert "HttpOnly" in session and "SameSite=Lax" in session and "Path=/api/admin" in session
    assert "Secure" not in session
    assert "HttpOnly" not in csrf and "SameSite=Lax" in csrf
    assert body["csrf_token"] and f"nexus_csrf={body['csrf_token']}" in csrf


async def test_a_cookie_authenticated_write_needs_the_session_csrf_token(hub: RunningHub) -> None:
    jar = aiohttp.CookieJar(unsafe=True)  # the test Hub is an IP-address host
    async with aiohttp.ClientSession(cookie_jar=jar) as s:
        async with s.post(
            hub.url + f"{A}/auth/login", json={"email": ADMIN_EMAIL, "password": hub.admin_password}
        ) as r:
            csrf = (await r.json())["csrf_token"]
        async with s.get(hub.url + f"{A}/orgs") as r:
            assert r.status == 200  # reads need no token
        other = await sign_in(hub.url, ADMIN_EMAIL, hub.admin_password)
        me_other = await other.get(f"{A}/auth/me")
        await other.close()
        for headers in (
            {},
            {"X-Requested-With": "fetch"},  # part 1's header alone is no longer enough
            {"X-CSRF-Token": "not-the-token"},
            {"X-CSRF-Token": me_other.json["csrf_token"]},  # another session's token
        ):
            async with s.post(hub.url + f"{A}/orgs", json={"id": "csrf-org"}, headers=headers) as r:
                body = await r.json()
                assert r.status == 403 and body["error"]["code"] == "csrf_required", (headers, body)
                assert body["error"]["request_id"]
        async with s.post(
            hub.url + f"{A}/orgs", json={"id": "csrf-org"}, headers={"X-CSRF-Token": csrf}
        ) as r:
            assert r.status == 201
    # A bearer call carries its credential explicitly: no CSRF token.
    bearer = await sign_in(hub.url, ADMIN_EMAIL, hub.admin_password)
    try:
        assert (await bearer.post(f"{A}/orgs", {"id": "bearer-org"})).status == 201
    finally:
        await bearer.close()


@pytest.fixture
async def hubs(
    nc: NATS, nats_url: str, topology: Topology, tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    """Start Hub replicas on this test's streams (stopped afterwards)."""
    servers: list[HubServer] = []

    async def start(**kw: Any) -> HubServer:
        server = HubServer(
            HubSettings(
                nats_url=nats_url,
                topology=topology,
                data_dir=tmp_path / f"hub{len(servers)}",
                port=0,
                snapshot_debounce_s=0.01,
                node_id=f"hub{len(servers)}",
                **kw,
            )
        )
        await server.start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        await s.stop()


async def test_cookies_are_secure_under_real_tls(hubs: Callable[..., Any], tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server: HubServer = await hubs(tls_cert=cert, tls_key=key)
    password = await server.bootstrap_admin(ADMIN_EMAIL)
    assert server.url.startswith("https://")
    ctx = ssl.create_default_context(cafile=str(cert))
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s,
        s.post(server.url + f"{A}/auth/login", json={"email": ADMIN_EMAIL, "password": password}) as r,
    ):
        assert r.status == 200
        cookies = _cookies(r.headers)
    assert "Secure" in cookies["nexus_session"] and "HttpOnly" in cookies["nexus_session"]
    assert "Secure" in cookies["nexus_csrf"]


async def test_a_trusted_proxy_speaks_for_the_caller_and_nobody_else_does(hubs: Callable[..., Any]) -> None:
    plain: HubServer = await hubs()
    password = await plain.bootstrap_admin(ADMIN_EMAIL)
    assert password is not None
    proxied: HubServer = await hubs(trusted_proxies=("127.0.0.0/8",))
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7, 127.0.0.2"}
    untrusted = await _login(plain.url, ADMIN_EMAIL, password, headers=forwarded)
    trusted = await _login(proxied.url, ADMIN_EMAIL, password, headers=forwarded)
    assert "Secure" not in _cookies(untrusted.headers)["nexus_session"]
    assert "Secure" in _cookies(trusted.headers)["nexus_session"]
    c = Client(proxied.url, trusted.json["token"])
    try:
        mine = (await c.get(f"{A}/auth/sessions")).json["items"]
    finally:
        await c.close()
    ips = {s["id"]: s["source_ip"] for s in mine}
    assert ips[trusted.json["session_id"]] == "203.0.113.7"
    assert ips[untrusted.json["session_id"]] == "127.0.0.1"  # the header was ignored


# --- sessions: timeouts and revocation ---------------------------------------------------


async def test_idle_and_absolute_timeouts(nc: NATS, topology: Topology) -> None:
    clock = [1_000_000_000_000]
    store = KvSessionStore(
        Bucket(nc.jetstream(), topology.session_bucket, ttl_s=3600), now_ms=lambda: clock[0]
    )
    store._cache_s = 0.0  # every get reads the bucket
    t0 = clock[0]
    idle = Session(user_id="u1", created_at_ms=t0, expires_at_ms=t0 + 600_000, idle_s=120)
    token = await store.create(idle)
    clock[0] += 100_000  # 100 s: still alive, and its last use moves on
    assert (s := await store.get(token)) is not None and s.last_seen_ms == clock[0]
    clock[0] += 100_000  # 100 s since the last use: alive
    assert await store.get(token) is not None
    clock[0] += 121_000  # idle too long
    assert await store.get(token) is None
    assert await store.list_user("u1") == []  # and removed from the index
    clock[0] = t0
    absolute = await store.create(
        Session(user_id="u2", created_at_ms=t0, expires_at_ms=t0 + 300_000, idle_s=120)
    )
    for _ in range(4):  # used every 90 s: never idle, but the absolute end holds
        clock[0] += 90_000
        alive = await store.get(absolute)
        assert (alive is not None) == (clock[0] < t0 + 300_000)


async def test_sessions_are_listed_and_revoked_server_side_across_replicas(
    hubs: Callable[..., Any],
) -> None:
    one: HubServer = await hubs()
    password = await one.bootstrap_admin(ADMIN_EMAIL)
    assert password is not None
    two: HubServer = await hubs()  # a second replica on the same streams and buckets
    admin = await sign_in(one.url, ADMIN_EMAIL, password)
    try:
        assert (await admin.post(f"{A}/users", {"id": "ann", "email": "ann@example.com"})).status == 201
        assert (await admin.put(f"{A}/users/ann/password", {"password": PASSWORD})).status == 204
        a1 = await sign_in(one.url, "ann@example.com", PASSWORD)
        a2 = await sign_in(two.url, "ann@example.com", PASSWORD)
        a3 = await sign_in(one.url, "ann@example.com", PASSWORD)
        a2_on_two = Client(two.url, a2.token)
        listed = (await a1.get(f"{A}/auth/sessions")).json["items"]
        assert len(listed) == 3 and sum(s["current"] for s in listed) == 1
        assert all(s["method"] == "password" and s["idle_timeout_seconds"] == 1800 for s in listed)
        # The user ends one of their other sessions; the other replica refuses it.
        me2 = (await a2_on_two.get(f"{A}/auth/me")).json
        assert (await a1.delete(f"{A}/auth/sessions/{me2['session_id']}")).status == 204
        assert await _refused_within(a2_on_two, 1.5)
        # Logout ends its own session at once.
        assert (await a3.post(f"{A}/auth/logout")).status == 204
        assert (await a3.get(f"{A}/auth/me")).status == 401
        # An admin sees and ends every session of a user (another replica too).
        a4 = Client(two.url, (await sign_in(two.url, "ann@example.com", PASSWORD)).token)
        assert (await a4.get(f"{A}/auth/me")).status == 200
        seen = (await admin.get(f"{A}/users/ann/sessions")).json["items"]
        assert len(seen) == 2
        ended = await admin.delete(f"{A}/users/ann/sessions")
        assert ended.status == 200 and ended.json["revoked"] == 2
        assert (await a1.get(f"{A}/auth/me")).status == 401  # same replica: at once
        assert await _refused_within(a4, 1.5)  # the other: within its cache bound
        assert (await admin.get(f"{A}/users/ann/sessions")).json["items"] == []
        # A disabled user's sessions stop at once on every replica.
        a5 = Client(two.url, (await sign_in(two.url, "ann@example.com", PASSWORD)).token)
        assert (await admin.patch(f"{A}/users/ann", {"disabled": True})).status == 200
        assert await _refused_within(a5, 0.5)
        for c in (a1, a2, a3, a2_on_two, a4, a5):
            await c.close()
    finally:
        await admin.close()


async def _refused_within(client: Client, seconds: float) -> bool:
    start = time.monotonic()
    while time.monotonic() - start < seconds + 1.0:
        if (await client.get(f"{A}/auth/me")).status == 401:
            took = time.monotonic() - start
            print(f"refused after {took * 1000:.0f} ms")
            return took <= seconds
        await asyncio.sleep(0.02)
    return False
