"""The forward proxy's front: authentication, allowlists, the SSRF guard,
plain http:// requests, limits, a parent proxy."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest

from ingress.proxy.auth import hash_password
from nexus.sim.server import SimServer, start_sim
from streams.config_base import ConfigError
from streams.config_validation import parse_config
from streams.events import RequestReceived
from streams.events_proxy import ProxyConnection
from tests.proxy.conftest import Events, MakeProxy, client_context, http_get, issuer_cn, tls_through, tunnel
from tests.proxy.pki import Pki


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_required_authentication_answers_407_and_names_the_user(
    make_proxy: MakeProxy, upstream: SimServer, upstream_pki: Pki
) -> None:
    events = Events()
    node = await make_proxy(
        upstream,
        events=events,
        auth={"required": True, "users": [{"name": "alice", "password_hash": hash_password("s3cret-pass")}]},
    )
    _, w, status, head = await tunnel(node, "plain.example.com:443")
    assert status == 407 and b'Proxy-Authenticate: Basic realm="Nexus"' in head
    w.close()
    _, w, status, _ = await tunnel(
        node, "plain.example.com:443", {"Proxy-Authorization": _basic("alice", "nope")}
    )
    assert status == 407
    w.close()
    reader, writer = await tls_through(
        node,
        "plain.example.com",
        client_context(upstream_pki.ca_path),
        {"Proxy-Authorization": _basic("alice", "s3cret-pass")},
    )
    assert (await http_get(reader, writer, "plain.example.com", "/healthz"))[0] == 200
    writer.close()
    for _ in range(100):
        if len(events.of(ProxyConnection)) == 3:
            break
        await asyncio.sleep(0.01)
    a, b, c = events.of(ProxyConnection)
    assert (a.status, a.bump_status, b.status) == (407, "blocked", 407)
    assert (c.tenant.user_id, c.auth, c.bump_status) == ("alice", "user", "spliced")


async def test_a_target_resolving_to_a_private_address_is_refused(make_proxy: MakeProxy) -> None:
    events = Events()
    node = await make_proxy(events=events)
    for target in ("127.0.0.1:443", "localhost:443", "10.1.2.3:443"):
        _, w, status, head = await tunnel(node, target)
        assert status == 403, head
        w.close()
    # A private target explicitly allowed by CIDR passes the guard (and then
    # fails to connect: nothing listens there).
    node2 = await make_proxy(allow_private_cidrs=["127.0.0.0/8"], allow_ports=[9])
    _, w, status, _ = await tunnel(node2, "127.0.0.1:9")
    assert status == 502
    w.close()


async def test_a_port_not_allowed_and_a_source_not_allowed_are_refused(make_proxy: MakeProxy) -> None:
    node = await make_proxy(allow_ports=[443])
    _, w, status, _ = await tunnel(node, "plain.example.com:25")
    assert status == 403
    w.close()
    closed = await make_proxy(allow_sources=["192.0.2.0/24"])
    _, w, status, _ = await tunnel(closed, "plain.example.com:443")
    assert status == 403
    w.close()
    assert closed.metrics.value("nexus_proxy_refused_total", {"reason": "source_not_allowed"}) == 1


async def test_the_per_source_rate_and_the_tunnel_limit(make_proxy: MakeProxy, upstream: SimServer) -> None:
    node = await make_proxy(upstream, limits={"per_source_rate": 0.001, "per_source_burst": 2})
    statuses = []
    for _ in range(3):
        _, w, status, _ = await tunnel(node, "plain.example.com:443")
        statuses.append(status)
        w.close()
    assert statuses == [200, 200, 429]
    small = await make_proxy(upstream, limits={"max_tunnels": 1})
    _, w1, s1, _ = await tunnel(small, "plain.example.com:443")
    _, w2, s2, _ = await tunnel(small, "plain.example.com:443")
    assert (s1, s2) == (200, 503)
    w1.close()
    w2.close()


async def test_a_slow_connect_head_is_cut(make_proxy: MakeProxy) -> None:
    node = await make_proxy(limits={"header_timeout_s": 0.3})
    r, w = await asyncio.open_connection(node.host, node.port)
    w.write(b"CONNECT plain.example.com:443 HTTP/1.1\r\n")
    await w.drain()
    out = await asyncio.wait_for(r.read(), 5)
    assert out.startswith(b"HTTP/1.1 408 ")
    w.close()


async def test_a_plain_http_request_is_forwarded(make_proxy: MakeProxy) -> None:
    plain = await start_sim(host="127.0.0.1", port=0)
    try:
        events = Events()
        node = await make_proxy(events=events, resolve={"api.openai.com:80": f"127.0.0.1:{plain.port}"})
        r, w = await asyncio.open_connection(node.host, node.port)
        w.write(b"GET http://api.openai.com/healthz HTTP/1.1\r\nHost: api.openai.com\r\n\r\n")
        await w.drain()
        out = await asyncio.wait_for(r.read(), 5)
        w.close()
        assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"ok")
        for _ in range(100):
            if events.of(ProxyConnection):
                break
            await asyncio.sleep(0.01)
        (conn,) = events.of(ProxyConnection)
        assert (conn.method, conn.target_host, conn.ai_service) == ("GET", "api.openai.com", "openai")
    finally:
        await plain.close()


async def test_chaining_through_a_parent_proxy(
    make_proxy: MakeProxy, upstream: SimServer, proxy_ca: tuple[Path, Path]
) -> None:
    parent_events = Events()
    parent = await make_proxy(upstream, events=parent_events, node_id="parent")
    # The child trusts the parent's CA upstream (a corporate parent that bumps).
    child = await make_proxy(
        upstream,
        parent_proxy=f"http://127.0.0.1:{parent.port}",
        resolve={},
        tls={"upstream_ca_files": [str(proxy_ca[0])]},
    )
    reader, writer = await tls_through(child, "api.openai.com", client_context(proxy_ca[0]))
    assert "Nexus proxy test CA" in issuer_cn(writer)
    assert (await http_get(reader, writer, "api.openai.com", "/healthz"))[0] == 200
    writer.close()
    # An LLM API call the child runs through its pipeline goes through the parent too.
    reader, writer = await tls_through(child, "api.openai.com", client_context(proxy_ca[0]))
    body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nAuthorization: Bearer sk-x\r\n"
        b"Content-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body)
    )
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200") and b"x-nexus-request-id" in answer.lower()
    # The child bumped; its upstream connection went through the parent,
    # which (bumping the same host) bumped again and verified the real upstream.
    await child.close()  # its pooled upstream connection (through the parent) ends
    for _ in range(100):
        if parent_events.of(ProxyConnection):
            break
        await asyncio.sleep(0.01)
    assert parent_events.of(ProxyConnection)[0].target_host == "api.openai.com"
    # The parent bumps api.openai.com too: the child's pipeline call reached
    # it (and ran through the parent's own pipeline).
    (seen,) = parent_events.of(RequestReceived)
    assert (seen.endpoint, seen.ingress, seen.node.id) == ("chat", "proxy", "parent")


async def test_a_parent_proxy_that_wants_credentials_gets_them_from_the_environment(
    make_proxy: MakeProxy,
    upstream: SimServer,
    proxy_ca: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The corporate parent requires Basic; the child sends the user:password
    # its config names by variable (never in the config), on every CONNECT.
    parent_events = Events()
    parent = await make_proxy(
        upstream,
        events=parent_events,
        node_id="parent",
        auth={
            "required": True,
            "users": [{"name": "nexus-egress", "password_hash": hash_password("egress-pass-1")}],
        },
    )
    chained = {
        "parent_proxy": f"http://127.0.0.1:{parent.port}",
        "resolve": {},
        "tls": {"upstream_ca_files": [str(proxy_ca[0])]},
    }
    monkeypatch.setenv("PARENT_PROXY_CREDS", "nexus-egress:egress-pass-1")
    child = await make_proxy(upstream, parent_proxy_auth_env="PARENT_PROXY_CREDS", node_id="child", **chained)
    reader, writer = await tls_through(child, "api.openai.com", client_context(proxy_ca[0]))
    assert (await http_get(reader, writer, "api.openai.com", "/healthz"))[0] == 200
    writer.close()
    await child.close()  # its pooled upstream connection (through the parent) ends
    for _ in range(100):
        if parent_events.of(ProxyConnection):
            break
        await asyncio.sleep(0.01)
    seen = parent_events.of(ProxyConnection)[0]
    assert (seen.auth, seen.tenant.user_id) == ("user", "nexus-egress")
    # Without them, the parent's 407 is the child's 502, naming the parent.
    bare = await make_proxy(upstream, node_id="child-no-creds", **chained)
    reader, writer = await tls_through(bare, "api.openai.com", client_context(proxy_ca[0]))
    status, body = await http_get(reader, writer, "api.openai.com", "/healthz")
    writer.close()
    assert status == 502 and b"parent proxy" in body and b"407" in body, body
    # Credentials never go in the URL, where the config would show them.
    with pytest.raises(ConfigError, match="parent_proxy_auth_env"):
        parse_config(b"proxy: {parent_proxy: 'http://u:p@127.0.0.1:3128'}\n", source="t.yaml")
