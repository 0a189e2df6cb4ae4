"""The Hub's users sign in to the proxy with their own e-mail and password
(issue 16: "proxy authentication against Hub users, so flows carry a
user"): a real Hub answers over NATS, a real proxy node asks it.  A yes is
remembered for ``proxy.auth.hub_remember_s`` (short here), so a disabled
user stops within it, and a stopped Hub lets in only what is remembered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client as NATS

from ingress.proxy.service import RunningProxy, hub_users, start_proxy
from nexus.sim.server import SimServer
from streams.config_snapshot import snapshot_from_config
from streams.events_admin import AdminAction
from streams.events_proxy import ProxyConnection
from streams.topology import Topology
from tests.hub.conftest import ADMIN_EMAIL, Client, RunningHub, admin, hub, nc  # noqa: F401 - fixtures
from tests.proxy.conftest import FAKE_HOSTS, SECRET, Events, basic, proxy_config, tunnel
from tests.proxy.pki import Pki

pytestmark = [pytest.mark.integration, pytest.mark.slow]

A = "/api/admin"
PASSWORD = "a-long-proxy-password-1"
WINDOW_S = 1.0  # proxy.auth.hub_remember_s in these tests


async def status_of(proxy: RunningProxy, login: str, password: str) -> tuple[int, bytes]:
    """The proxy's answer to a CONNECT with these credentials."""
    reader, writer, status, _ = await tunnel(proxy.node, "api.openai.com:443", basic(login, password))
    body = b"" if status == 200 else await reader.read()
    writer.close()
    return status, body


async def add_user(api: Client, uid: str, *, password: str | None = PASSWORD, org: str = "demo-org") -> str:
    email = f"{uid}@example.com"
    made = await api.post(f"{A}/users", {"id": uid, "email": email, "org": org})
    assert made.status == 201, made
    if password is not None:
        assert (await api.put(f"{A}/users/{uid}/password", {"password": password})).status == 204
    return email


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
async def proxy(
    hub: RunningHub,  # noqa: F811
    nc: NATS,  # noqa: F811
    upstream: SimServer,
    upstream_pki: Pki,
    proxy_ca: tuple[Path, Path],
    topology: Topology,
    events: Events,
) -> AsyncIterator[RunningProxy]:
    """A proxy node that asks the Hub about its users (as ``nexus proxy
    --hub`` and ``nexus up`` wire it), authentication required."""
    resolve = {f"{h}:443": f"127.0.0.1:{upstream.port}" for h in FAKE_HOSTS}
    cfg = proxy_config(proxy_ca, upstream_pki, resolve, auth={"required": True, "hub_remember_s": WINDOW_S})
    running = await start_proxy(
        snapshot_from_config(cfg, SECRET),
        events,
        node_id="px-users",
        port=0,
        admin_port=0,
        hub_users=hub_users(nc, topology, "px-users"),
    )
    yield running
    await running.close()


def metric(proxy: RunningProxy, name: str, **labels: str) -> float:
    return proxy.node.metrics.value(name, labels)


async def test_a_hub_user_signs_in_and_everyone_else_gets_the_same_407(
    hub: RunningHub,  # noqa: F811
    admin: Client,  # noqa: F811
    proxy: RunningProxy,
    events: Events,
) -> None:
    ann = await add_user(admin, "ann")
    sso = await add_user(admin, "sso", password=None)  # signs in through an identity provider only
    dora = await add_user(admin, "dora")
    assert (await admin.patch(f"{A}/users/dora", {"disabled": True})).status == 200
    token = (await admin.post(f"{A}/auth/tokens", {"description": "not a proxy password"})).json["token"]

    assert (await status_of(proxy, ann, PASSWORD))[0] == 200
    assert (await status_of(proxy, ann.upper(), PASSWORD))[0] == 200  # e-mails match case-blind
    conn = events.of(ProxyConnection)[0]
    assert (conn.auth, conn.tenant.user_id, conn.tenant.org_id) == ("hub_user", "ann", "demo-org")

    refused = [
        (ann, "not-the-password-1"),  # wrong password
        ("nobody@example.com", PASSWORD),  # unknown user
        (dora, PASSWORD),  # disabled
        (sso, PASSWORD),  # no password: SSO only
        (ADMIN_EMAIL, token),  # an admin API token is not a password
        (ADMIN_EMAIL, hub.admin_password + "x"),
        ("", PASSWORD),
    ]
    answers = {await status_of(proxy, login, pw) for login, pw in refused}
    # One answer for all of them: nothing says which part was wrong.
    assert answers == {(407, b"proxy authentication failed\n")}, answers
    assert metric(proxy, "nexus_proxy_auth_total", result="failed") == len(refused)
    assert metric(proxy, "nexus_proxy_auth_total", result="hub_user") == 2
    assert metric(proxy, "nexus_proxy_hub_signin_total", outcome="denied") == len(refused) - 1  # "" not asked
    flows = [e for e in events.of(ProxyConnection) if e.status == 407]
    assert len(flows) == len(refused) and all(not f.tenant.user_id for f in flows)
    # The admin's own password works: the token was refused as a token.
    assert (await status_of(proxy, ADMIN_EMAIL, hub.admin_password))[0] == 200


async def test_a_disabled_user_or_changed_password_stops_within_the_window(
    hub: RunningHub,  # noqa: F811
    admin: Client,  # noqa: F811
    proxy: RunningProxy,
) -> None:
    ann = await add_user(admin, "ann")
    bob = await add_user(admin, "bob")
    assert (await status_of(proxy, ann, PASSWORD))[0] == 200
    assert (await status_of(proxy, bob, PASSWORD))[0] == 200
    asked = metric(proxy, "nexus_proxy_hub_signin_total", outcome="ok")
    assert (await status_of(proxy, ann, PASSWORD))[0] == 200
    assert metric(proxy, "nexus_proxy_hub_signin_total", outcome="ok") == asked  # remembered, not asked
    # The window over: the Hub is asked whether ann is as she was (no
    # password sent, no scrypt), not to check her password again.
    await asyncio.sleep(WINDOW_S + 0.05)
    assert (await status_of(proxy, ann, PASSWORD))[0] == 200
    assert metric(proxy, "nexus_proxy_hub_signin_total", outcome="rechecked") == 1
    assert metric(proxy, "nexus_proxy_hub_signin_total", outcome="ok") == asked
    # Any change to her moves her stamp: the password is checked again.
    assert (await admin.patch(f"{A}/users/ann", {"name": "Ann"})).status == 200
    await asyncio.sleep(WINDOW_S + 0.05)
    assert (await status_of(proxy, ann, PASSWORD))[0] == 200
    assert metric(proxy, "nexus_proxy_hub_signin_total", outcome="ok") == asked + 1

    t0 = time.monotonic()
    assert (await admin.patch(f"{A}/users/ann", {"disabled": True})).status == 200
    new_password = "bobs-new-long-password-2"
    assert (await admin.put(f"{A}/users/bob/password", {"password": new_password})).status == 204
    while (await status_of(proxy, ann, PASSWORD))[0] == 200:
        assert time.monotonic() - t0 < WINDOW_S + 2, "a disabled user kept getting in"
        await asyncio.sleep(0.05)
    disabled_after = time.monotonic() - t0
    while (await status_of(proxy, bob, PASSWORD))[0] == 200:
        assert time.monotonic() - t0 < WINDOW_S + 2, "an old password kept working"
        await asyncio.sleep(0.05)
    assert (await status_of(proxy, bob, new_password))[0] == 200
    print(f"\nproxy sign-in: a disabled Hub user refused {disabled_after * 1000:.0f} ms after the change")


async def test_with_the_hub_away_only_a_remembered_sign_in_works_until_its_window_ends(
    hub: RunningHub,  # noqa: F811
    admin: Client,  # noqa: F811
    nc: NATS,  # noqa: F811
    topology: Topology,
    proxy: RunningProxy,
) -> None:
    ann = await add_user(admin, "ann")
    bob = await add_user(admin, "bob")
    assert (await status_of(proxy, ann, PASSWORD))[0] == 200
    remembered_at = time.monotonic()
    await hub.server.stop()

    assert (await status_of(proxy, bob, PASSWORD))[0] == 407  # a fresh sign-in needs the Hub
    assert metric(proxy, "nexus_proxy_hub_signin_total", outcome="unavailable") == 1
    assert (await status_of(proxy, ann, PASSWORD))[0] == 200  # remembered
    assert time.monotonic() - remembered_at < WINDOW_S
    await asyncio.sleep(max(0.0, WINDOW_S - (time.monotonic() - remembered_at)) + 0.05)
    assert (await status_of(proxy, ann, PASSWORD))[0] == 407

    # Something else answering on the subject is not believed unless it
    # says yes, properly: a malformed answer or a yes without a user is no.
    async def impostor(msg: Any) -> None:
        await msg.respond(answers.pop(0))

    answers = [
        b"{not json",
        b'{"ok": "yes", "user": "ann"}',
        b'{"ok": true}',
        b'{"ok": false, "user": "ann"}',
    ]
    sub = await nc.subscribe(topology.proxy_signin_subject, cb=impostor)
    try:
        for _ in range(4):
            assert (await status_of(proxy, ann, PASSWORD))[0] == 407
    finally:
        await sub.unsubscribe()
    assert metric(proxy, "nexus_proxy_hub_signin_total", outcome="malformed") == 2
    assert metric(proxy, "nexus_proxy_hub_signin_total", outcome="denied") == 2


async def _proxy_logins(nc: NATS, topology: Topology, hub: RunningHub) -> list[AdminAction]:  # noqa: F811
    """The audit trail's records of refused proxy sign-ins, once the Hub's
    audit publisher has stored them."""
    assert hub.server.audit is not None
    assert await hub.server.audit.flush(10.0)
    js = nc.jetstream()
    info = await js.stream_info(topology.admin_stream)
    raw = [
        (await js.get_msg(topology.admin_stream, seq)).data or b""
        for seq in range(info.state.first_seq, info.state.last_seq + 1)
    ]
    records = [msgspec.json.decode(b, type=AdminAction) for b in raw if b'"type":"admin.action"' in b]
    return [r for r in records if r.action == "auth:proxy_login"]


async def test_guessing_a_hub_users_password_through_the_proxy_locks_them_out(
    hub: RunningHub,  # noqa: F811
    admin: Client,  # noqa: F811
    proxy: RunningProxy,
    nc: NATS,  # noqa: F811
    topology: Topology,
) -> None:
    """The Hub's login guard counts guesses through the proxy like guesses
    at its sign-in page: five wrong in a row lock the login (its default),
    and then not even the right password gets through either door.  Each
    refusal is in the audit trail, naming the login, the proxy node and
    the lockout; no password is."""
    eve = await add_user(admin, "eve")
    for i in range(5):
        assert (await status_of(proxy, eve, f"guess-number-{i}-long"))[0] == 407
    assert (await status_of(proxy, eve, PASSWORD))[0] == 407
    assert metric(proxy, "nexus_proxy_hub_signin_total", outcome="throttled") == 1
    anonymous = Client(hub.url)
    try:
        login = await anonymous.post(f"{A}/auth/login", {"email": eve, "password": PASSWORD})
    finally:
        await anonymous.close()
    assert (login.status, login.error) == (429, "locked_out"), login
    refused = [r for r in await _proxy_logins(nc, topology, hub) if r.actor_name == eve]
    assert [r.outcome for r in refused] == ["invalid_credentials"] * 5 + ["locked_out"]
    assert {(r.decision, r.route, r.method) for r in refused} == {
        ("unauthenticated", "proxy/px-users", "PROXY")
    }
    assert refused[0].resource.endswith("user/eve") and refused[0].source_ip == "127.0.0.1"
    assert refused[4].deciding_statement.startswith("lockout: 5 wrong passwords")
    assert not any(
        PASSWORD in msgspec.json.encode(r).decode() or "guess-number" in msgspec.json.encode(r).decode()
        for r in refused
    )
    # An admin lifts the lock: the proxy lets her in again.
    assert (await admin.post(f"{A}/users/eve/unlock", {})).status == 204
    assert (await status_of(proxy, eve, PASSWORD))[0] == 200


async def test_tunnels_opened_together_ask_the_hub_once(
    hub: RunningHub,  # noqa: F811
    admin: Client,  # noqa: F811
    proxy: RunningProxy,
) -> None:
    """A browser opens its tunnels at once: one question to the Hub, not
    one each (each would take a token from the Hub's per-login throttle,
    whose burst is 10)."""
    ann = await add_user(admin, "ann")
    got = await asyncio.gather(*(status_of(proxy, ann, PASSWORD) for _ in range(20)))
    assert {s for s, _ in got} == {200}
    assert metric(proxy, "nexus_proxy_hub_signin_total", outcome="ok") == 1
