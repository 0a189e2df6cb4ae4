"""Smaller rules of the proxy: the fleet kill switch, corporate versus
unknown provider keys, the idle limit of tunnels, plain-HTTP WebSocket
upgrades, and config errors that name their field."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import aiohttp
import msgspec
import pytest
from aiohttp import web

from ingress.http1 import Headers
from ingress.proxy.credentials import ConfigCredentials, fingerprint
from nexus.sim.server import SimServer
from streams.config import NexusConfig, Provider
from streams.config_base import ConfigError
from streams.config_validation import parse_config
from streams.events_proxy import ProxyConnection
from tests.proxy.conftest import (
    Events,
    MakeProxy,
    client_context,
    issuer_cn,
    proxy_config,
    tls_through,
    tunnel,
)
from tests.proxy.pki import Pki


async def _events(events: Events, n: int) -> list[ProxyConnection]:
    for _ in range(200):
        if len(events.of(ProxyConnection)) >= n:
            break
        await asyncio.sleep(0.01)
    return events.of(ProxyConnection)


async def test_the_fleet_kill_switch_from_config_and_from_the_hub_input(
    make_proxy: MakeProxy, upstream: SimServer, upstream_pki: Pki, proxy_ca: tuple[Path, Path]
) -> None:
    base = proxy_config(proxy_ca, upstream_pki, {"api.openai.com:443": f"127.0.0.1:{upstream.port}"})
    killed = msgspec.convert(
        {
            **msgspec.to_builtins(base),
            "hooks": {"kill_switch": {"engaged": True, "reason": "fleet-wide: a bad rollout, INC-9"}},
        },
        NexusConfig,
    )
    events = Events()
    node = await make_proxy(config=killed, events=events)
    _, w = await tls_through(node, "api.openai.com", client_context(upstream_pki.ca_path))
    assert "Upstream test CA" in issuer_cn(w)
    w.close()
    # The Hub's word replaces the file's: released fleet-wide, bumping resumes.
    node.kill.set_fleet(False)
    _, w = await tls_through(node, "api.openai.com", client_context(proxy_ca[0]))
    assert "Nexus proxy test CA" in issuer_cn(w)
    w.close()
    node.kill.set_fleet(True, "hub command")
    _, w = await tls_through(node, "api.openai.com", client_context(upstream_pki.ca_path))
    w.close()
    assert [c.bump_status for c in await _events(events, 3)] == ["kill_switch", "bumped", "kill_switch"]


def test_a_corporate_key_is_told_from_a_personal_one() -> None:
    secret = b"s" * 32
    providers = [Provider(name="openai", base_url="https://api.openai.com/v1", api_key_env="CORP_OPENAI")]
    creds = ConfigCredentials(secret, providers, {"CORP_OPENAI": "sk-corporate-123"})
    corp = creds.inspect(Headers([("Authorization", "Bearer sk-corporate-123")]))
    personal = creds.inspect(Headers([("x-api-key", "sk-ant-mine")]))
    nexus = creds.inspect(Headers([("Authorization", "Bearer nvk_" + "a" * 64)]))
    assert corp == (fingerprint(secret, "sk-corporate-123"), "corporate")
    assert personal[1] == "unknown" and nexus[1] == "nexus"
    assert creds.inspect(Headers()) == ("", "")
    # A fingerprint says nothing of the key: not its plain hash, not a prefix.
    assert corp[0] not in hashlib.sha256(b"sk-corporate-123").hexdigest()


async def test_an_idle_tunnel_is_closed(make_proxy: MakeProxy, upstream: SimServer) -> None:
    events = Events()
    node = await make_proxy(upstream, events=events, limits={"idle_timeout_s": 0.3})
    reader, writer, status, _ = await tunnel(node, "plain.example.com:443")
    assert status == 200
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the proxy, nothing sent
    writer.close()
    (conn,) = await _events(events, 1)
    assert conn.bump_status == "spliced" and conn.duration_ms >= 300


async def test_a_plain_http_websocket_upgrade_is_relayed_raw(make_proxy: MakeProxy) -> None:
    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str("echo:" + msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        node = await make_proxy(resolve={"ws.example.com:80": f"127.0.0.1:{port}"})
        async with (
            aiohttp.ClientSession() as s,
            s.ws_connect("http://ws.example.com/ws", proxy=f"http://{node.host}:{node.port}") as ws,
        ):
            await ws.send_str("hi")
            assert (await ws.receive(timeout=5)).data == "echo:hi"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("proxy: {tls: {leaf_days: 500}}", "proxy.tls.leaf_days"),
        ("proxy: {allow_sources: [not-a-cidr]}", "proxy.allow_sources[0]"),
        ("proxy: {resolve: {'api.openai.com': '127.0.0.1'}}", "must be host:port"),
        ("proxy: {resolve: {'api.openai.com:443': 'nowhere'}}", "is not an IP address"),
        ("proxy: {interception: [{host: '(a', match: regex}]}", "proxy.interception[0].host"),
        ("proxy: {auth: {users: [{name: bob, password_hash: plain}]}}", "password_hash"),
        ("proxy: {tls: {cas: [{cert_file: a.pem}]}}", "proxy.tls.cas[0]"),
        ("proxy: {parent_proxy: 'socks5://x:1'}", "proxy.parent_proxy"),
        ("proxy: {bump_everything: true}", "bump_everything"),
    ],
)
def test_a_bad_proxy_section_names_its_field(section: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_config(section)


def test_the_shipped_catalogue_knows_the_big_services() -> None:
    from ingress.proxy.catalog import AiCatalogue

    cat = AiCatalogue({"llm.internal.example": "in-house"})
    assert cat.service("api.openai.com") == "openai"
    assert cat.service("chatgpt.com") == cat.service("ab.chatgpt.com") == "openai"
    assert cat.service("claude.ai") == "anthropic"
    assert cat.service("generativelanguage.googleapis.com") == "gemini"
    assert cat.service("chat.mistral.ai") == "mistral"
    assert cat.service("api.deepseek.com") == "deepseek"
    assert cat.service("myres.openai.azure.com") == "azure-openai"
    assert cat.service("llm.internal.example") == "in-house"
    # Vertex AI's regional hosts are not subdomains of aiplatform.googleapis.com.
    assert cat.service("us-central1-aiplatform.googleapis.com") == "vertex-ai"
    assert cat.service("aiplatform.googleapis.com") == cat.service("aiplatform.eu.rep.googleapis.com")
    assert (
        cat.service("storage.googleapis.com") == cat.service("x.us-central1-aiplatform.googleapis.com") == ""
    )
    assert cat.service("example.com") == "" and cat.service("notchatgpt.com") == ""
