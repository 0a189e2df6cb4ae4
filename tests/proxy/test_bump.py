"""TLS bump end to end: real TLS on both sides, the official SDKs
configured only with the proxy and the CA, pinning fallback, a bad
upstream certificate, the kill switch."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from pathlib import Path

import anthropic
import openai
import pytest

from nexus.sim.server import SimServer
from streams.events import RequestCompleted, RequestReceived
from streams.events_proxy import ProxyConnection, ProxyRequest
from tests.proxy.conftest import Events, MakeProxy, client_context, http_get, issuer_cn, tls_through, tunnel
from tests.proxy.pki import Pki


async def _connections(events: Events, n: int = 1) -> list[ProxyConnection]:
    for _ in range(200):
        found = events.of(ProxyConnection)
        if len(found) >= n:
            return found
        await asyncio.sleep(0.01)
    raise AssertionError(f"expected {n} connection events, got {events.of(ProxyConnection)}")


async def test_a_listed_host_is_bumped_with_a_leaf_from_our_ca(
    make_proxy: MakeProxy, upstream: SimServer, proxy_ca: tuple[Path, Path]
) -> None:
    events = Events()
    node = await make_proxy(upstream, events=events)
    reader, writer = await tls_through(node, "api.openai.com", client_context(proxy_ca[0]))
    assert "Nexus proxy test CA" in issuer_cn(writer)
    status, body = await http_get(reader, writer, "api.openai.com", "/healthz?key=secret")
    assert (status, body) == (200, b"ok")
    writer.close()
    (conn,) = await _connections(events)
    assert conn.bump_status == "bumped"
    assert conn.target_host == "api.openai.com" and conn.ai_service == "openai"
    assert conn.requests == 1 and conn.bytes_down == 2
    (req,) = events.of(ProxyRequest)
    assert (req.method, req.path, req.status, req.connection_id) == ("GET", "/healthz", 200, conn.request_id)
    assert node.metrics.value("nexus_proxy_connections_total", {"bump_status": "bumped"}) == 1


async def test_an_unlisted_host_is_spliced_and_the_client_sees_the_real_certificate(
    make_proxy: MakeProxy, upstream: SimServer, upstream_pki: Pki
) -> None:
    events = Events()
    node = await make_proxy(upstream, events=events)
    reader, writer = await tls_through(node, "plain.example.com", client_context(upstream_pki.ca_path))
    assert "Upstream test CA" in issuer_cn(writer)
    status, body = await http_get(reader, writer, "plain.example.com", "/healthz")
    assert (status, body) == (200, b"ok")
    writer.close()
    (conn,) = await _connections(events)
    assert conn.bump_status == "spliced" and conn.ai_service == ""
    assert conn.bytes_up > 100 and conn.bytes_down > 100  # TLS records, relayed untouched
    assert events.of(ProxyRequest) == []


async def test_the_openai_sdk_works_with_only_the_proxy_and_the_ca(
    make_proxy: MakeProxy, upstream: SimServer, proxy_ca: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    events = Events()
    node = await make_proxy(upstream, events=events)
    monkeypatch.setenv("HTTPS_PROXY", f"http://{node.host}:{node.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(proxy_ca[0]))
    client = openai.AsyncOpenAI(api_key="sk-personal-key-1234", max_retries=0)
    try:
        chat = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello through the proxy"}]
        )
        assert chat.choices[0].message.content
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Stream it"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text
    finally:
        await client.close()
    # LLM API calls run the pipeline: the gateway's events, marked as proxy traffic.
    reqs = [r for r in events.of(RequestReceived) if r.path == "/v1/chat/completions"]
    assert [(r.ingress, r.requested_model, r.stream) for r in reqs] == [
        ("proxy", "gpt-4o-mini", False),
        ("proxy", "gpt-4o-mini", True),
    ]
    assert [e.status for e in events.of(RequestCompleted)] == [200, 200]
    # The personal key is recorded only as a fingerprint, classified unknown.
    marks = [r.interception for r in reqs]
    assert all(
        m is not None and len(m.credential_fingerprint) == 16 and m.credential_class == "unknown"
        for m in marks
    )
    assert all("sk-personal" not in repr(e) for e in events.items)


async def test_without_the_ca_the_sdk_fails_with_a_certificate_error(
    make_proxy: MakeProxy, upstream: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = await make_proxy(upstream)
    monkeypatch.setenv("HTTPS_PROXY", f"http://{node.host}:{node.port}")
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    client = openai.AsyncOpenAI(api_key="sk-x", max_retries=0)
    try:
        with pytest.raises(openai.APIConnectionError) as info:
            await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
    finally:
        await client.close()
    cause = info.value.__cause__
    while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
        cause = cause.__cause__ or cause.__context__
    assert isinstance(cause, ssl.SSLCertVerificationError)


async def test_the_anthropic_sdk_works_with_only_the_proxy_and_the_ca(
    make_proxy: MakeProxy,
    upstream: SimServer,
    proxy_ca: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events = Events()
    node = await make_proxy(upstream, events=events, env={"CORP_ANTHROPIC_KEY": "sk-ant-corporate"})
    monkeypatch.setenv("HTTPS_PROXY", f"http://{node.host}:{node.port}")
    monkeypatch.setenv("SSL_CERT_FILE", str(proxy_ca[0]))
    client = anthropic.AsyncAnthropic(api_key="sk-ant-personal", max_retries=0)
    try:
        msg = await client.messages.create(
            model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "Hello"}]
        )
        assert msg.content[0].type == "text"
        async with client.messages.stream(
            model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "Stream"}]
        ) as stream:
            text = "".join([t async for t in stream.text_stream])
        assert text
    finally:
        await client.close()
    reqs = [r for r in events.of(RequestReceived) if r.path == "/v1/messages"]
    assert [(r.requested_model, r.stream, r.interception and r.interception.ai_service) for r in reqs] == [
        ("claude-sonnet-4-5", False, "anthropic"),
        ("claude-sonnet-4-5", True, "anthropic"),
    ]
    assert [e.status for e in events.of(RequestCompleted)] == [200, 200]


async def test_an_invalid_upstream_certificate_is_a_502_naming_the_reason(
    make_proxy: MakeProxy, expired_upstream: SimServer, proxy_ca: tuple[Path, Path]
) -> None:
    events = Events()
    node = await make_proxy(expired_upstream, events=events)
    reader, writer = await tls_through(node, "expired.example.com", client_context(proxy_ca[0]))
    status, body = await http_get(reader, writer, "expired.example.com", "/healthz")
    writer.close()
    assert status == 502
    assert b"certificate has expired" in body
    (conn,) = await _connections(events)
    assert conn.bump_status == "upstream_cert_error" and "expired" in conn.reason
    assert (
        node.metrics.value(
            "nexus_proxy_handshake_failures_total", {"side": "upstream", "reason": "certificate"}
        )
        == 1
    )


async def test_a_client_that_refuses_our_leaf_gets_the_host_spliced_next_time(
    make_proxy: MakeProxy, upstream: SimServer, upstream_pki: Pki
) -> None:
    events = Events()
    node = await make_proxy(upstream, events=events, tls={"pinning_fallback_s": 60})
    # A pinned client: it trusts only the real upstream's CA.
    pinned = client_context(upstream_pki.ca_path)
    with pytest.raises(ssl.SSLCertVerificationError):
        await tls_through(node, "api.openai.com", pinned)
    await _connections(events, 1)
    reader, writer = await tls_through(node, "api.openai.com", pinned)
    assert "Upstream test CA" in issuer_cn(writer)
    status, _ = await http_get(reader, writer, "api.openai.com", "/healthz")
    writer.close()
    assert status == 200
    first, second = await _connections(events, 2)
    assert first.bump_status == "bumped" and first.handshake_error == "CLIENT_CLOSED_IN_HANDSHAKE"
    assert second.bump_status == "pinning_fallback"
    assert node.metrics.value("nexus_proxy_pinned_hosts") == 1
    assert node.metrics.value("nexus_proxy_connections_total", {"bump_status": "pinning_fallback"}) == 1


async def test_the_kill_switch_splices_new_connections_at_once(
    make_proxy: MakeProxy, upstream: SimServer, upstream_pki: Pki, proxy_ca: tuple[Path, Path]
) -> None:
    events = Events()
    node = await make_proxy(upstream, events=events)
    # A bumped connection in flight...
    r1, w1 = await tls_through(node, "api.openai.com", client_context(proxy_ca[0]))
    node.kill.engage("incident 4711: the bump breaks a client", dt.timedelta(minutes=5), actor="test")
    # ...new connections are spliced from the next one on,
    r2, w2 = await tls_through(node, "api.openai.com", client_context(upstream_pki.ca_path))
    assert "Upstream test CA" in issuer_cn(w2)
    assert (await http_get(r2, w2, "api.openai.com", "/healthz"))[0] == 200
    # ...and the one in flight finishes as it was.
    assert (await http_get(r1, w1, "api.openai.com", "/healthz"))[0] == 200
    w1.close()
    w2.close()
    statuses = sorted(c.bump_status for c in await _connections(events, 2))
    assert statuses == ["bumped", "kill_switch"]
    node.kill.release(actor="test")
    _r3, w3 = await tls_through(node, "api.openai.com", client_context(proxy_ca[0]))
    assert "Nexus proxy test CA" in issuer_cn(w3)
    w3.close()


async def test_a_non_tls_payload_to_a_listed_host_is_relayed_raw(
    make_proxy: MakeProxy, upstream: SimServer
) -> None:
    from nexus.sim.server import start_sim

    plain = await start_sim(host="127.0.0.1", port=0)
    try:
        events = Events()
        node = await make_proxy(
            upstream, events=events, resolve={"api.openai.com:80": f"127.0.0.1:{plain.port}"}
        )
        reader, writer, status, _ = await tunnel(node, "api.openai.com:80")
        assert status == 200
        status, body = await http_get(reader, writer, "api.openai.com", "/healthz")
        writer.close()
        assert (status, body) == (200, b"ok")
        (conn,) = await _connections(events)
        assert conn.bump_status == "spliced" and "not TLS" in conn.reason
    finally:
        await plain.close()


async def test_a_client_offering_h2_gets_http11_and_works(
    make_proxy: MakeProxy, upstream: SimServer, proxy_ca: tuple[Path, Path]
) -> None:
    node = await make_proxy(upstream)
    ctx = client_context(proxy_ca[0])
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    reader, writer = await tls_through(node, "api.openai.com", ctx)
    assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
    assert (await http_get(reader, writer, "api.openai.com", "/healthz")) == (200, b"ok")
    writer.close()


async def test_during_a_ca_rotation_the_new_ca_signs_and_both_are_published(
    make_proxy: MakeProxy, upstream: SimServer, proxy_ca: tuple[Path, Path], tmp_path: Path
) -> None:
    from ingress.proxy.certs import generate_ca

    new_cert, new_key = tmp_path / "new-ca.pem", tmp_path / "new-ca-key.pem"
    generate_ca(new_cert, new_key, name="Nexus rotated CA")
    node = await make_proxy(
        upstream,
        tls={
            "cas": [{"cert_file": str(new_cert), "key_file": str(new_key)}, {"cert_file": str(proxy_ca[0])}]
        },
    )
    assert node.ca_bundle == new_cert.read_bytes() + proxy_ca[0].read_bytes()
    _, writer = await tls_through(node, "api.openai.com", client_context(new_cert))
    assert "Nexus rotated CA" in issuer_cn(writer)
    writer.close()


async def test_bytes_sent_before_the_200_make_the_tunnel_raw(
    make_proxy: MakeProxy, upstream: SimServer
) -> None:
    from nexus.sim.server import start_sim

    plain = await start_sim(host="127.0.0.1", port=0)
    try:
        events = Events()
        node = await make_proxy(
            upstream, events=events, resolve={"api.openai.com:443": f"127.0.0.1:{plain.port}"}
        )
        reader, writer = await asyncio.open_connection(node.host, node.port)
        # An impatient client: its first request rides with the CONNECT.
        writer.write(
            b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n"
            b"GET /healthz HTTP/1.1\r\nHost: api.openai.com\r\nConnection: close\r\n\r\n"
        )
        data = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert data.startswith(b"HTTP/1.1 200 Connection Established\r\n\r\nHTTP/1.1 200 OK")
        assert data.endswith(b"ok")
        (conn,) = await _connections(events)
        assert conn.bump_status == "spliced" and "before the 200" in conn.reason
    finally:
        await plain.close()
