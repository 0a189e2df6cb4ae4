"""Both clients of the gateway's provider calls behave alike as the callers
see it (issue 17): the lean one (the default) and aiohttp
(``NEXUS_UPSTREAM_HTTP=aiohttp``).  The gateway suite runs on the default;
this runs what the client owns on each: answers and streams, a provider
down (502, recorded as unreachable), a silent one (504), a stream cut off
(the error frame), a gzip answer, a caller leaving mid-stream (the
provider's connection closed), and connections kept across calls."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator

import aiohttp
import msgspec
import pytest
from aiohttp import web

from ingress.gateway import create_app, start_gateway
from ingress.gateway.front import NODE
from ingress.upstream.lean import LeanClient
from ingress.upstream.transport import AiohttpTransport
from nexus.sim import SimSettings
from streams.config_validation import parse_config
from streams.events import UpstreamResult
from tests.gateway.conftest import (
    SECRET,
    EventRecorder,
    Stack,
    config_yaml,
    free_port,
    make_keys,
    make_stack,
)
from tests.inprocess import in_process_snapshot


@pytest.fixture(params=["lean", "aiohttp"])
async def gw(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    monkeypatch.setenv("NEXUS_UPSTREAM_HTTP", request.param)
    s = await make_stack()
    http = s.gateway.runner.app[NODE].current.upstreams.get("sim").http
    assert isinstance(http, LeanClient if request.param == "lean" else AiohttpTransport)
    yield s
    await s.gateway.close()
    await s.sim.close()


def _body(model: str, stream: bool = False) -> dict[str, object]:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}


async def _post(stack: Stack, model: str, stream: bool = False) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{stack.url}/chat/completions",
            json=_body(model, stream),
            headers={"Authorization": f"Bearer {stack.keys.full}"},
        ) as r,
    ):
        return r.status, await r.read()


def _attempts(stack: Stack) -> list[UpstreamResult]:
    return [e for e in stack.events.events if isinstance(e, UpstreamResult)]


async def test_answers_and_streams(gw: Stack) -> None:
    status, body = await _post(gw, "sim-small")
    assert status == 200 and json.loads(body)["choices"][0]["message"]["content"]
    status, body = await _post(gw, "sim-small", stream=True)
    assert status == 200 and body.rstrip().endswith(b"data: [DONE]")
    assert body.count(b"data: ") > 3


async def test_a_provider_down_is_a_502_recorded_unreachable(gw: Stack) -> None:
    status, body = await _post(gw, "gone")
    assert status == 502 and json.loads(body)["error"]["code"] == "upstream_error"
    assert [a.error_code for a in _attempts(gw)] == ["upstream_unreachable"]


async def test_a_silent_provider_is_a_504(gw: Stack) -> None:
    status, body = await _post(gw, "sleepy")
    assert status == 504 and json.loads(body)["error"]["code"] == "timeout"
    assert [a.error_code for a in _attempts(gw)] == ["timeout"]


async def test_a_stream_cut_off_ends_with_the_error_frame(gw: Stack) -> None:
    status, body = await _post(gw, "dropper", stream=True)
    assert status == 200
    last = [line for line in body.split(b"\n") if line.startswith(b"data: ")][-1]
    assert json.loads(last[6:])["error"]["code"] == "upstream_error"


async def test_connections_are_kept_across_calls(gw: Stack) -> None:
    for _ in range(5):
        assert (await _post(gw, "sim-small"))[0] == 200
    http = gw.gateway.runner.app[NODE].current.upstreams.get("sim").http
    if isinstance(http, LeanClient):
        assert http.opened == 1
    else:
        assert isinstance(http, AiohttpTransport)
        connector = http.session.connector
        assert connector is not None and len(connector._conns) == 1  # one idle key, kept


async def test_a_caller_leaving_mid_stream_closes_the_providers_connection(gw: Stack) -> None:
    gw.sim.state.settings = SimSettings(api_key="sk-sim-test", tokens_per_s=10)
    async with aiohttp.ClientSession() as http:
        r = await http.post(
            f"{gw.url}/chat/completions",
            json=_body("sim-small", True),
            headers={"Authorization": f"Bearer {gw.keys.full}"},
        )
        await r.content.readany()  # the stream has begun
        r.close()  # the caller hangs up
    upstream = gw.gateway.runner.app[NODE].current.upstreams.get("sim")
    for _ in range(100):
        if isinstance(upstream.http, LeanClient):
            idle, busy = upstream.http.idle_count(), upstream.http.in_use
        else:
            assert isinstance(upstream.http, AiohttpTransport)
            connector = upstream.http.session.connector
            assert connector is not None
            idle = sum(len(v) for v in connector._conns.values())
            busy = len(connector._acquired)
        if busy == 0:
            break
        await asyncio.sleep(0.05)
    # Not back in the pool mid-body: closed.
    assert (idle, busy) == (0, 0)
    codes = [a.error_code for a in _attempts(gw)]
    assert codes == [""], codes  # recorded as the caller leaving, not as a provider failure


@pytest.mark.parametrize("client", ["lean", "aiohttp"])
async def test_a_gzip_answer_reaches_the_caller_decoded(client: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXUS_UPSTREAM_HTTP", client)
    asked: list[str | None] = []
    answer = {
        "id": "chatcmpl-gz",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "zipped"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }

    async def chat(request: web.Request) -> web.Response:
        asked.append(request.headers.get("Accept-Encoding"))
        return web.Response(
            body=gzip.compress(json.dumps(answer).encode()),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    provider = web.Application()
    provider.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(provider)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    keys = make_keys()
    cfg = msgspec.yaml.decode(config_yaml(port, free_port(), keys))
    snapshot = in_process_snapshot(parse_config(msgspec.yaml.encode(cfg)), SECRET)
    server = await start_gateway(create_app(snapshot, EventRecorder(), env={"SIM_TEST_KEY": "sk-sim-test"}))
    try:
        async with (
            aiohttp.ClientSession(auto_decompress=False) as http,
            http.post(
                f"{server.url}/chat/completions",
                json=_body("sim-small"),
                headers={"Authorization": f"Bearer {keys.full}"},
            ) as r,
        ):
            status, body = r.status, await r.read()
    finally:
        await server.close()
        await runner.cleanup()
    assert status == 200, body
    assert json.loads(body)["choices"][0]["message"]["content"] == "zipped"
    assert asked == ["gzip, deflate"]
