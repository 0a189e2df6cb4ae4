"""Interception domains (match kinds, priority, per-path actions, the
adapter and its error policy, added headers), connection-stage hooks, and
WebSocket upgrades relayed raw."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiohttp
import msgspec
import pytest
from aiohttp import web

from ingress.proxy.domains import InterceptionTable
from ingress.proxy.service import build_engine
from nexus.sim.server import SimServer
from streams.config import NexusConfig
from streams.config_proxy import InterceptDomain, InterceptPath
from streams.config_snapshot import snapshot_from_config
from streams.events import RequestCompleted, RequestFailed
from streams.events_compliance import StageDecision
from streams.events_proxy import ProxyConnection, ProxyRequest
from tests.proxy.conftest import SECRET, Events, MakeProxy, client_context, proxy_config, tls_through, tunnel
from tests.proxy.pki import Pki


def test_matching_kinds_and_priority() -> None:
    table = InterceptionTable(
        (
            InterceptDomain(host="*.openai.com", match="glob", priority=50, adapter="generic"),
            InterceptDomain(host="api.openai.com", priority=10, adapter="openai"),
            InterceptDomain(host="chat.", match="prefix"),
            InterceptDomain(host=r"[a-z]+\.googleapis\.com", match="regex"),
        )
    )
    assert table.lookup("API.OpenAI.com").adapter == "openai"  # type: ignore[union-attr]
    assert table.lookup("files.openai.com").adapter == "generic"  # type: ignore[union-attr]
    assert table.lookup("chat.example") is not None
    assert table.lookup("generativelanguage.googleapis.com") is not None
    assert table.lookup("x.generativelanguage.googleapis.com") is None  # fullmatch
    assert table.lookup("example.com") is None
    d = InterceptDomain(
        host="chatgpt.com", paths=(InterceptPath(prefix="/backend-api/files", action="block"),)
    )
    assert InterceptionTable.path_action(d, "/backend-api/files/1").action == "block"
    assert InterceptionTable.path_action(d, "/backend-api/conversation").action == "process"


async def _request(
    node: object, host: str, ca: Path, method: str, path: str, body: bytes = b""
) -> tuple[int, bytes]:
    r, w = await tls_through(node, host, client_context(ca))  # type: ignore[arg-type]
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    w.write(head.encode() + body)
    data = await r.read()
    w.close()
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    return int(head_bytes.split(b" ", 2)[1]), payload


async def test_path_block_adapter_error_and_added_headers(
    make_proxy: MakeProxy, upstream: SimServer, proxy_ca: tuple[Path, Path]
) -> None:
    events = Events()
    node = await make_proxy(
        upstream,
        events=events,
        interception=[
            {
                "host": "api.openai.com",
                "adapter": "openai",
                "on_adapter_error": "block",
                "paths": [{"prefix": "/v1/files", "action": "block"}],
                "add_headers": {"X-Tenant-Restriction": "acme-corp"},
            }
        ],
    )
    status, body = await _request(node, "api.openai.com", proxy_ca[0], "POST", "/v1/files", b"{}")
    assert status == 403 and b"/v1/files" in body
    status, body = await _request(
        node, "api.openai.com", proxy_ca[0], "POST", "/v1/chat/completions", b"not json"
    )
    # A recognised LLM API call runs the pipeline: a body it cannot read is
    # the provider-format 400, and nothing reaches the provider.
    assert status == 400 and b"invalid_json" in body
    assert upstream.state.recorder.snapshot()["requests"] == []
    chat = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
    status, _ = await _request(node, "api.openai.com", proxy_ca[0], "POST", "/v1/chat/completions", chat)
    assert status == 200
    (seen,) = upstream.state.recorder.snapshot()["requests"]
    assert seen.path == "/v1/chat/completions"
    actions = [(r.action, r.status, bool(r.adapter_error)) for r in events.of(ProxyRequest)]
    assert actions == [("block", 403, False)]
    assert [(e.status, e.error_code) for e in events.of(RequestFailed)] == [(400, "invalid_json")]
    assert [e.status for e in events.of(RequestCompleted)] == [200]


async def test_added_headers_reach_the_upstream(
    make_proxy: MakeProxy, proxy_ca: tuple[Path, Path], upstream_pki: Pki
) -> None:
    seen: list[str] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append(request.headers.get("ChatGPT-Allowed-Workspace-Id", ""))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=upstream_pki.server_context(["chatgpt.com"]))
    await site.start()
    port = runner.addresses[0][1]
    try:
        node = await make_proxy(
            resolve={"chatgpt.com:443": f"127.0.0.1:{port}"},
            interception=[
                {"host": "chatgpt.com", "add_headers": {"ChatGPT-Allowed-Workspace-Id": "ws-acme"}}
            ],
        )
        status, _ = await _request(node, "chatgpt.com", proxy_ca[0], "GET", "/")
        assert status == 200 and seen == ["ws-acme"]
    finally:
        await runner.cleanup()


async def test_a_connection_hook_blocks_with_403_before_any_tunnel(
    proxy_ca: tuple[Path, Path], upstream_pki: Pki, make_proxy: MakeProxy, upstream: SimServer
) -> None:
    base = proxy_config(proxy_ca, upstream_pki, {"api.openai.com:443": f"127.0.0.1:{upstream.port}"})
    cfg = msgspec.convert(
        {
            **msgspec.to_builtins(base),
            "hooks": {
                "pipeline": [
                    {
                        "id": "no-loopback-clients",
                        "type": "ip-access-filter",
                        "stage": "connection",
                        "ingress": ["proxy"],
                        "settings": {"mode": "deny", "cidrs": ["127.0.0.0/8"]},
                    }
                ]
            },
        },
        NexusConfig,
    )
    engine = await build_engine(snapshot_from_config(cfg, SECRET), None, "nexus:", "px")
    assert engine is not None
    events = Events()
    try:
        node = await make_proxy(config=cfg, events=events, engine=engine)
        _, w, status, head = await tunnel(node, "api.openai.com:443")
        w.close()
        assert status == 403, head
        for _ in range(100):
            if events.of(ProxyConnection):
                break
            await asyncio.sleep(0.01)
        (decision,) = events.of(StageDecision)
        assert (decision.stage, decision.decision) == ("connection", "block")
        (conn,) = events.of(ProxyConnection)
        assert conn.bump_status == "blocked" and conn.status == 403
        assert "blocked by compliance policy" in conn.reason
    finally:
        await engine.aclose()


async def test_a_websocket_upgrade_in_a_bumped_flow_is_relayed_raw(
    make_proxy: MakeProxy, proxy_ca: tuple[Path, Path], upstream_pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
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
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=upstream_pki.server_context(["api.openai.com"]))
    await site.start()
    port = runner.addresses[0][1]
    events = Events()
    try:
        node = await make_proxy(events=events, resolve={"api.openai.com:443": f"127.0.0.1:{port}"})
        ctx = ssl.create_default_context(cafile=str(proxy_ca[0]))
        async with (
            aiohttp.ClientSession() as s,
            s.ws_connect("wss://api.openai.com/ws", proxy=f"http://{node.host}:{node.port}", ssl=ctx) as ws,
        ):
            await ws.send_str("hello")
            msg = await ws.receive(timeout=5)
            assert msg.data == "echo:hello"
        for _ in range(200):
            if events.of(ProxyConnection):
                break
            await asyncio.sleep(0.01)
        (conn,) = events.of(ProxyConnection)
        assert conn.bump_status == "bumped" and conn.bytes_up > 0 and conn.bytes_down > 0
        (req,) = events.of(ProxyRequest)
        assert req.status == 101
        # The relay's TLS sides close on the end of input: no half-open request for asyncio to warn of.
        assert "eof_received" not in caplog.text
    finally:
        await runner.cleanup()


async def test_a_domain_filter_hook_refuses_a_host_at_the_connection_stage(
    proxy_ca: tuple[Path, Path], upstream_pki: Pki, make_proxy: MakeProxy, upstream: SimServer
) -> None:
    resolve = {f"{h}:443": f"127.0.0.1:{upstream.port}" for h in ("api.deepseek.com", "api.openai.com")}
    base = proxy_config(proxy_ca, upstream_pki, resolve)
    cfg = msgspec.convert(
        {
            **msgspec.to_builtins(base),
            "hooks": {
                "pipeline": [
                    {
                        "id": "no-deepseek",
                        "type": "domain-filter",
                        "stage": "connection",
                        "settings": {"mode": "deny", "hosts": ["*.deepseek.com"]},
                    }
                ]
            },
        },
        NexusConfig,
    )
    engine = await build_engine(snapshot_from_config(cfg, SECRET), None, "nexus:", "px")
    assert engine is not None
    events = Events()
    try:
        node = await make_proxy(config=cfg, events=events, engine=engine)
        _, w, status, _ = await tunnel(node, "api.deepseek.com:443")
        w.close()
        assert status == 403
        _, w, status, _ = await tunnel(node, "api.openai.com:443")
        w.close()
        assert status == 200
        for _ in range(100):
            if len(events.of(ProxyConnection)) == 2:
                break
            await asyncio.sleep(0.01)
        blocked = next(c for c in events.of(ProxyConnection) if c.target_host == "api.deepseek.com")
        assert blocked.bump_status == "blocked" and blocked.ai_service == "deepseek"
        assert "*.deepseek.com" in blocked.reason
    finally:
        await engine.aclose()
