"""The connection layer as an attacker meets it (issue 13 item 8): what the
HTTP parser refuses is a JSON error in the caller's format that quotes
nothing back, the server does not name its software's version, a 405 under
/v1/messages is Anthropic-shaped, and sockets that dribble their headers are
closed after the header timeout while normal traffic is served."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

from tests.gateway.conftest import Stack, make_stack
from tests.rawhttp import RawConnection, RawResponse, request

SECRET = "SECRET-PROMPT-7f3a9c"
HEADER_TIMEOUT_S = 1.0


def _hostport(stack: Stack) -> tuple[str, int]:
    url = urlsplit(stack.url)
    assert url.hostname is not None and url.port is not None
    return url.hostname, url.port


async def _one(stack: Stack, data: bytes) -> tuple[RawResponse, RawConnection]:
    conn = await RawConnection.open(*_hostport(stack))
    await conn.send(data)
    return await conn.response(), conn


def _chat(stack: Stack) -> bytes:
    body = b'{"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]}'
    return request(
        "POST",
        "/v1/chat/completions",
        body,
        {"Authorization": f"Bearer {stack.keys.full}", "Content-Type": "application/json"},
    )


@pytest.mark.parametrize(
    ("path", "anthropic"),
    [("/v1/messages", True), ("/v1/messages/batches", True), ("/v1/chat/completions", False)],
)
async def test_route_errors_are_in_the_callers_format(stack: Stack, path: str, anthropic: bool) -> None:
    r, conn = await _one(stack, request("GET", path, headers={"x-api-key": stack.keys.full}))
    await conn.close()
    assert r.status in (404, 405)
    body = r.json()
    assert isinstance(body, dict)
    if anthropic:
        assert body["type"] == "error"
        assert body["error"]["type"] in ("invalid_request_error", "not_found_error")
    else:
        assert body["error"]["code"] in ("method_not_allowed", "unknown_url")


BAD = [
    pytest.param(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nBad Header " + SECRET.encode() + b": 1\r\n\r\n",
        400,
        False,
        id="invalid_header_name",
    ),
    pytest.param(
        b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n"
        + SECRET.encode()
        + b"\r\n0\r\n\r\n",
        400,
        True,
        id="broken_chunk_size_under_messages",
    ),
    pytest.param(b"GARBAGE " + SECRET.encode() + b"\r\n\r\n", 400, False, id="not_http"),
    pytest.param(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Pad: " + SECRET.encode() * 800 + b"\r\n\r\n",
        431,
        False,
        id="header_line_too_long",
    ),
    pytest.param(
        b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-H%d: %s\r\n" % (i, SECRET.encode()) for i in range(200))
        + b"\r\n",
        431,
        True,
        id="too_many_headers_under_messages",
    ),
    pytest.param(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n",
        400,
        False,
        id="two_content_lengths",
    ),
    pytest.param(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        False,
        id="content_length_and_chunked",
    ),
]


@pytest.mark.parametrize(("data", "status", "anthropic"), BAD)
async def test_parser_errors_are_json_in_the_callers_format_and_echo_nothing(
    stack: Stack, data: bytes, status: int, anthropic: bool
) -> None:
    r, conn = await _one(stack, data)
    assert r.status == status
    assert r.headers["content-type"].startswith("application/json")
    assert SECRET.encode() not in r.body and b"Traceback" not in r.body
    body = r.json()
    assert isinstance(body, dict)
    if anthropic:
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    else:
        assert set(body["error"]) == {"message", "type", "code", "param"}
    # The framing is lost: the server says it closes, and does.
    assert r.closes and await conn.closed_by_server()
    assert "aiohttp" not in r.headers.get("server", "") and "Python" not in r.headers.get("server", "")
    await conn.close()


async def test_server_header_names_no_version(stack: Stack) -> None:
    for data in (_chat(stack), request("GET", "/healthz"), request("GET", "/nowhere")):
        r, conn = await _one(stack, data)
        await conn.close()
        assert r.headers["server"] == "nexus", r.headers


@pytest.fixture
async def quick_stack() -> AsyncIterator[Stack]:
    s = await make_stack(header_timeout_s=HEADER_TIMEOUT_S, max_inflight=512)
    yield s
    await s.gateway.close()
    await s.sim.close()


async def _dribble(host: str, port: int, started: list[float], closed: list[float]) -> None:
    """A slowloris socket: a header line every 0.2 s, never the blank line."""
    conn = await RawConnection.open(host, port)
    await conn.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
    started.append(time.monotonic())
    try:
        for i in range(100):
            await asyncio.sleep(0.2)
            await conn.send(b"X-Dribble-%d: %s\r\n" % (i, SECRET.encode()))
            if conn.reader.at_eof():
                break
    except (ConnectionError, OSError):
        pass
    # Whatever the server said before closing (a 408), then EOF.
    if await conn.closed_by_server(timeout=10) or conn.reader.at_eof():
        closed.append(time.monotonic())
    await conn.close()


async def test_slowloris_sockets_are_closed_after_the_header_timeout(quick_stack: Stack) -> None:
    host, port = _hostport(quick_stack)
    started: list[float] = []
    closed: list[float] = []
    attack = [asyncio.create_task(_dribble(host, port, started, closed)) for _ in range(200)]
    # Normal traffic meanwhile, on fresh and on kept-alive connections.
    latencies = []
    conn = await RawConnection.open(host, port)
    for _ in range(20):
        t = time.monotonic()
        await conn.send(_chat(quick_stack))
        assert (await conn.response()).status == 200
        latencies.append(time.monotonic() - t)
        await asyncio.sleep(0.05)
    await asyncio.gather(*attack)
    assert len(started) == 200 and len(closed) == 200
    held = sorted(c - s for s, c in zip(sorted(started), sorted(closed), strict=True))
    print(f"\nslowloris: 200 sockets held {held[0]:.2f}-{held[-1]:.2f} s (timeout {HEADER_TIMEOUT_S} s)")
    assert held[0] >= HEADER_TIMEOUT_S * 0.9
    assert held[-1] < HEADER_TIMEOUT_S + 3.0  # 20 s+ before
    assert max(latencies) < 2.0
    # The kept-alive connection idled past the header timeout between two
    # requests: idle is not dribbling, it still serves.
    await asyncio.sleep(HEADER_TIMEOUT_S * 1.5)
    await conn.send(_chat(quick_stack))
    assert (await conn.response()).status == 200
    await conn.close()


async def test_a_head_sent_in_pieces_within_the_timeout_is_served(quick_stack: Stack) -> None:
    conn = await RawConnection.open(*_hostport(quick_stack))
    data = _chat(quick_stack)
    for piece in (data[:10], data[10:60], data[60:]):
        await conn.send(piece)
        await asyncio.sleep(HEADER_TIMEOUT_S / 4)
    assert (await conn.response()).status == 200
    await conn.close()


async def test_a_silent_connection_gets_a_408_after_the_header_timeout(quick_stack: Stack) -> None:
    conn = await RawConnection.open(*_hostport(quick_stack))
    t = time.monotonic()
    await conn.send(b"POST /v1/messages HTTP/1.1\r\nx-api-key: " + SECRET.encode() + b"\r\n")
    r = await conn.response(timeout=HEADER_TIMEOUT_S + 5)
    assert r.status == 408 and r.closes and time.monotonic() - t >= HEADER_TIMEOUT_S * 0.9
    body = r.json()
    assert isinstance(body, dict) and body["type"] == "error"  # under /v1/messages: Anthropic's
    assert SECRET.encode() not in r.body
    assert await conn.closed_by_server()
    await conn.close()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(request("GET", "//v1//messages"), id="repeated_slashes_404"),
        pytest.param(
            request("OPTIONS", "/v1/models", headers={"anthropic-version": "2023-06-01"}), id="models_405"
        ),
        pytest.param(
            b"GET /v1/models HTTP/1.1\r\nanthropic-version: 2023-06-01\r\nBad Header: x\r\n\r\n",
            id="models_parse_error",
        ),
    ],
)
async def test_anthropic_callers_get_anthropic_errors_before_any_handler(stack: Stack, data: bytes) -> None:
    """An Anthropic SDK's /v1/models (anthropic-version), and /v1//messages:
    route and parser errors were OpenAI-shaped there."""
    r, conn = await _one(stack, data)
    await conn.close()
    assert 400 <= r.status < 500
    body = r.json()
    assert (
        isinstance(body, dict) and body.get("type") == "error" and set(body["error"]) == {"type", "message"}
    )
