"""Both HTTP layers of the gateway's /v1 API answer alike (issue 17): the
lean one (``http1``, the default) and aiohttp (``NEXUS_GATEWAY_HTTP=aiohttp``).
The whole gateway suite runs on the default; this runs the behaviours a
front end owns on each, over raw sockets: answers and their headers, a
stream, errors in the caller's grammar, 405 with Allow, the operations
routes, a refused request then the same connection reused, pipelining,
Expect: 100-continue, a 413 on record, shedding."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

from ingress.gateway.front import NODE
from streams.events import RequestCompleted, RequestFailed
from tests.gateway.conftest import Stack, make_stack
from tests.rawhttp import RawConnection, request

CHAT = b'{"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]}'
STREAM = b'{"model": "sim-small", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'


@pytest.fixture(params=["http1", "aiohttp"])
async def front(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    monkeypatch.setenv("NEXUS_GATEWAY_HTTP", request.param)
    s = await make_stack(max_body=4096)
    assert (s.gateway.lean is not None) == (request.param == "http1")
    yield s
    await s.gateway.close()
    await s.sim.close()


async def _conn(stack: Stack) -> RawConnection:
    url = urlsplit(stack.url)
    assert url.hostname is not None and url.port is not None
    return await RawConnection.open(url.hostname, url.port)


def _auth(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.keys.full}", "Content-Type": "application/json"}


async def test_an_answer_and_its_headers(front: Stack) -> None:
    c = await _conn(front)
    await c.send(request("POST", "/v1/chat/completions", CHAT, _auth(front)))
    r = await c.response()
    assert r.status == 200 and r.headers["server"] == "nexus"
    assert r.headers["content-type"].startswith("application/json")
    rid = r.headers["x-nexus-request-id"]
    assert r.headers["x-nexus-routed-provider"] and b'"choices"' in r.body
    await c.close()
    for _ in range(50):
        if any(isinstance(e, RequestCompleted) for e in front.events.of(rid)):
            break
        await asyncio.sleep(0.02)
    assert "RequestCompleted" in front.events.types(rid)


async def test_a_stream_is_chunked_server_sent_events(front: Stack) -> None:
    c = await _conn(front)
    await c.send(request("POST", "/v1/chat/completions", STREAM, _auth(front)))
    r = await c.response()
    assert r.status == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["transfer-encoding"] == "chunked"
    assert r.body.rstrip().endswith(b"data: [DONE]")
    await c.send(request("POST", "/v1/chat/completions", CHAT, _auth(front)))  # reused after it
    assert (await c.response()).status == 200
    await c.close()


async def test_a_refused_request_then_the_same_connection_serves(front: Stack) -> None:
    c = await _conn(front)
    await c.send(request("POST", "/v1/messages", CHAT, {"x-api-key": "nvk_wrong"}))
    r = await c.response()
    body = r.json()
    assert r.status == 401 and isinstance(body, dict) and body["type"] == "error"  # Anthropic's shape
    assert not r.closes
    await c.send(request("POST", "/v1/chat/completions", CHAT, _auth(front)))
    assert (await c.response()).status == 200
    await c.close()


async def test_route_errors_in_the_callers_grammar(front: Stack) -> None:
    c = await _conn(front)
    await c.send(request("GET", "/v1/chat/completions", headers=_auth(front)))
    r = await c.response()
    assert r.status == 405 and "POST" in r.headers["allow"]
    await c.send(request("GET", "/v1/messages/nowhere", headers={"x-api-key": front.keys.full}))
    r = await c.response()
    body = r.json()
    assert r.status == 404 and isinstance(body, dict) and body["type"] == "error"
    await c.send(request("GET", "/nowhere"))
    r = await c.response()
    assert r.status == 404 and "x-nexus-request-id" in r.headers
    await c.close()


async def test_the_operations_routes(front: Stack) -> None:
    c = await _conn(front)
    await c.send(request("GET", "/healthz"))
    r = await c.response()
    body = r.json()
    assert r.status == 200 and isinstance(body, dict) and body["status"] == "ok"
    await c.send(request("GET", "/metrics"))
    r = await c.response()
    assert r.status == 200 and b"nexus_" in r.body
    await c.send(request("GET", "/metrics/tenants"))
    assert (await c.response()).status == 401  # the admin token
    for method in ("GET", "PUT", "DELETE"):  # the node's break-glass: its admin token too
        await c.send(request(method, "/internal/break-glass"))
        assert (await c.response()).status == 401
    await c.close()


async def test_pipelined_requests_are_answered_in_order(front: Stack) -> None:
    c = await _conn(front)
    await c.send(
        request("POST", "/v1/chat/completions", CHAT, _auth(front))
        + request("GET", "/v1/models", headers=_auth(front))
        + request("GET", "/healthz")
    )
    first, second, third = await c.response(), await c.response(), await c.response()
    assert b'"choices"' in first.body and b'"data"' in second.body and b'"status"' in third.body
    await c.close()


async def test_expect_100_continue(front: Stack) -> None:
    c = await _conn(front)
    head = request("POST", "/v1/chat/completions", b"", {**_auth(front), "Expect": "100-continue"})
    head = head.replace(b"Content-Length: 0", b"Content-Length: %d" % len(CHAT))
    await c.send(head)
    interim = await asyncio.wait_for(c.reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100")
    await c.send(CHAT)
    assert (await c.response()).status == 200
    await c.close()


async def test_a_body_over_the_limit_is_a_413_on_record(front: Stack) -> None:
    c = await _conn(front)
    await c.send(request("POST", "/v1/chat/completions", b"x" * 5000, _auth(front)))
    r = await c.response()
    body = r.json()
    assert r.status == 413 and isinstance(body, dict) and body["error"]["code"] == "request_too_large"
    assert r.closes
    rid = r.headers["x-nexus-request-id"]
    failed = [e for e in front.events.of(rid) if isinstance(e, RequestFailed)]
    assert [e.status for e in failed] == [413]
    await c.close()


async def test_an_overloaded_gateway_sheds_with_429(front: Stack) -> None:
    node = front.gateway.runner.app[NODE]
    node.inflight += 10_000  # as if that many were in flight
    try:
        c = await _conn(front)
        await c.send(request("POST", "/v1/messages", CHAT, {"x-api-key": front.keys.full}))
        r = await c.response()
        body = r.json()
        assert r.status == 429 and r.headers["retry-after"] and isinstance(body, dict)
        assert body["type"] == "error"  # Anthropic's shape under /v1/messages
        await c.close()
    finally:
        node.inflight -= 10_000
