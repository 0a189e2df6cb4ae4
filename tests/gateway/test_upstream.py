"""The upstream transport: the credential comes from the provider's
environment variable, the pool honours max_connections, and a host name
that resolves to a private address is refused at connect time."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time

import aiohttp
import msgspec
import pytest

from ingress.gateway import create_app, start_gateway
from nexus.sim import SimSettings
from streams.config_validation import parse_config
from streams.events import UpstreamResult
from tests.gateway.conftest import SECRET, EventRecorder, Stack, config_yaml, free_port
from tests.inprocess import in_process_snapshot

CHAT = {"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]}


async def _post(url: str, key: str) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}) as r,
    ):
        return r.status, await r.json()


async def test_missing_provider_credential_is_a_502_not_a_401(stack: Stack) -> None:
    app = create_app(stack.snapshot, EventRecorder(), env={})  # SIM_TEST_KEY not set
    server = await start_gateway(app)
    try:
        status, body = await _post(server.url, stack.keys.full)
    finally:
        await server.close()
    assert status == 502 and body["error"]["code"] == "auth_failed"


async def test_pool_honours_max_connections(stack: Stack) -> None:
    cfg = msgspec.yaml.decode(config_yaml(stack.sim.port, free_port(), stack.keys))
    cfg["providers"][0]["max_connections"] = 1
    snapshot = in_process_snapshot(parse_config(msgspec.yaml.encode(cfg)), SECRET)
    stack.sim.state.settings = SimSettings(latency_ms=200, api_key="sk-sim-test")
    server = await start_gateway(create_app(snapshot, EventRecorder(), env={"SIM_TEST_KEY": "sk-sim-test"}))
    try:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(_post(server.url, stack.keys.full) for _ in range(3)))
        elapsed = time.perf_counter() - t0
    finally:
        await server.close()
    assert [s for s, _ in results] == [200, 200, 200]
    assert elapsed >= 0.6  # one connection: the three requests went one after another


def _private_hostname() -> str | None:
    host = socket.gethostname()
    try:
        addrs = {i[4][0] for i in socket.getaddrinfo(host, None)}
    except OSError:
        return None
    if host == "localhost" or not addrs or any(ipaddress.ip_address(a).is_global for a in addrs):
        return None
    return host


async def test_private_address_behind_a_hostname_is_refused(stack: Stack) -> None:
    host = _private_hostname()
    if host is None:
        pytest.skip("this machine's host name does not resolve to a private address")
    # The sim listens behind that name: only the resolver stands in the way.
    stack.sim.state.settings = SimSettings()
    for allow, expected in ((True, 200), (False, 502)):
        cfg = msgspec.yaml.decode(config_yaml(stack.sim.port, free_port(), stack.keys))
        # The config check cannot see through a host name; the resolver must.
        cfg["providers"][0].update(base_url=f"http://{host}:{stack.sim.port}/v1", allow_private_network=allow)
        snapshot = in_process_snapshot(parse_config(msgspec.yaml.encode(cfg)), SECRET)
        events = EventRecorder()
        server = await start_gateway(create_app(snapshot, events, env={}))
        try:
            status, body = await _post(server.url, stack.keys.full)
        finally:
            await server.close()
        assert status == expected, body
    assert body["error"]["code"] == "upstream_error"
    (attempt,) = [e for e in events.events if isinstance(e, UpstreamResult)]
    assert attempt.error_code == "upstream_unreachable"


async def test_a_providers_cookie_never_rides_on_later_requests(stack: Stack) -> None:
    """Callers share the upstream session: a Set-Cookie from the provider
    (for one caller's request) must not be sent with anyone's next one."""
    seen: list[str | None] = []

    async def chat(request: aiohttp.web.Request) -> aiohttp.web.Response:
        seen.append(request.headers.get("Cookie"))
        resp = aiohttp.web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )
        resp.set_cookie("__cf_bm", "tenant-a-session", path="/")
        return resp

    provider = aiohttp.web.Application()
    provider.router.add_post("/v1/chat/completions", chat)
    runner = aiohttp.web.AppRunner(provider)
    await runner.setup()
    port = free_port()
    await aiohttp.web.TCPSite(runner, "127.0.0.1", port).start()
    cfg = msgspec.yaml.decode(config_yaml(port, free_port(), stack.keys))
    # A host name: a cookie jar ignores cookies from bare IP addresses.
    cfg["providers"][0]["base_url"] = f"http://localhost:{port}/v1"
    snapshot = in_process_snapshot(parse_config(msgspec.yaml.encode(cfg)), SECRET)
    server = await start_gateway(create_app(snapshot, EventRecorder(), env={"SIM_TEST_KEY": "sk-sim-test"}))
    try:
        results = [await _post(server.url, stack.keys.full) for _ in range(3)]
    finally:
        await server.close()
        await runner.cleanup()
    assert [s for s, _ in results] == [200, 200, 200]
    assert seen == [None, None, None]
