"""Malformed bodies on every POST endpoint: a 4xx in the caller's format
(Anthropic's on /v1/messages, OpenAI's elsewhere) naming the field, never
a 500, and a connection that either still works or is said to close.
Each of these was a 500 (or a 503 "quota store unreachable") before."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest

from streams.events import RequestFailed
from tests.gateway.conftest import Stack
from tests.rawhttp import RawConnection, RawResponse, request


@dataclass(frozen=True)
class Endpoint:
    path: str
    body: dict[str, Any]  # a valid request
    output_limit: str  # the field that bounds the output (or a bounded number)
    anthropic: bool = False


CHAT = Endpoint(
    "/v1/chat/completions",
    {"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]},
    "max_tokens",
)
MESSAGES = Endpoint(
    "/v1/messages",
    {"model": "sim-small", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
    "max_tokens",
    anthropic=True,
)
RESPONSES = Endpoint("/v1/responses", {"model": "sim-small", "input": "hi"}, "max_output_tokens")
EMBEDDINGS = Endpoint("/v1/embeddings", {"model": "embedder", "input": "hi"}, "dimensions")
ENDPOINTS = [pytest.param(e, id=e.path.rsplit("/", 1)[1]) for e in (CHAT, MESSAGES, RESPONSES, EMBEDDINGS)]


def _auth(stack: Stack, ep: Endpoint) -> dict[str, str]:
    if ep.anthropic:
        return {"x-api-key": stack.keys.full}
    return {"Authorization": f"Bearer {stack.keys.full}"}


async def _exchange(
    stack: Stack, ep: Endpoint, body: bytes, **headers: str
) -> tuple[RawResponse, RawConnection]:
    url = urlsplit(stack.url)
    assert url.hostname is not None and url.port is not None
    conn = await RawConnection.open(url.hostname, url.port)
    headers = {**_auth(stack, ep), "Content-Type": "application/json", **headers}
    await conn.send(request("POST", ep.path, body, headers))
    return await conn.response(), conn


def _assert_error(ep: Endpoint, r: RawResponse, status: int, field: str | None) -> str:
    """The error is in the caller's grammar and names ``field``; returns its message."""
    assert r.status == status, r.body
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert isinstance(body, dict)
    if ep.anthropic:
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
        message: str = body["error"]["message"]
        if field is not None:
            assert field in message
    else:
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code", "param"}
        message = body["error"]["message"]
        assert body["error"]["param"] == field
    assert "Traceback" not in message
    return message


async def _still_serves(conn: RawConnection, stack: Stack, ep: Endpoint) -> None:
    """The same keep-alive connection answers the next (valid) request."""
    await conn.send(request("POST", ep.path, json.dumps(ep.body).encode(), _auth(stack, ep)))
    assert (await conn.response()).status == 200


def _with(ep: Endpoint, **fields: Any) -> bytes:
    return json.dumps({**ep.body, **fields}).encode()


@pytest.mark.parametrize("ep", ENDPOINTS)
async def test_invalid_utf8_is_a_400(stack: Stack, ep: Endpoint) -> None:
    body = _with(ep, user="caf\u00e9").replace(b"caf\\u00e9", b"caf\xe9")
    r, conn = await _exchange(stack, ep, body)
    assert "UTF-8" in _assert_error(ep, r, 400, None)
    assert not r.closes
    await _still_serves(conn, stack, ep)
    await conn.close()


@pytest.mark.parametrize("depth", [200, 5_000])
@pytest.mark.parametrize("ep", ENDPOINTS)
async def test_deep_nesting_is_a_400(stack: Stack, ep: Endpoint, depth: int) -> None:
    # 200 levels parse, then overflowed whatever walked them; 5,000 overflowed the parser.
    body = _with(ep).replace(b"{", b'{"deep": ' + b"[" * depth + b"]" * depth + b", ", 1)
    r, conn = await _exchange(stack, ep, body)
    assert "nests deeper than 128" in _assert_error(ep, r, 400, None)
    await _still_serves(conn, stack, ep)
    await conn.close()


async def test_nesting_within_the_limit_is_served(stack: Stack) -> None:
    # A tool schema 60 objects deep: 125 levels of JSON with the envelope.
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(60):
        schema = {"type": "object", "properties": {"x": schema}}
    tools = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
    r, conn = await _exchange(stack, CHAT, _with(CHAT, tools=tools))
    assert r.status == 200, r.body
    await conn.close()


@pytest.mark.parametrize("ep", ENDPOINTS)
async def test_gzip_that_is_not_gzip_is_a_400_that_closes(stack: Stack, ep: Endpoint) -> None:
    r, conn = await _exchange(stack, ep, b"this is not gzip at all", **{"Content-Encoding": "gzip"})
    assert "Content-Encoding" in _assert_error(ep, r, 400, None)
    # The parser's framing is gone with the body: the server says so, and does it.
    assert r.closes
    assert await conn.closed_by_server()
    await conn.close()


@pytest.mark.parametrize("ep", ENDPOINTS)
async def test_real_gzip_is_served(stack: Stack, ep: Endpoint) -> None:
    r, conn = await _exchange(stack, ep, gzip.compress(_with(ep)), **{"Content-Encoding": "gzip"})
    assert r.status == 200, r.body
    await conn.close()


async def test_unknown_content_encoding_is_a_415(stack: Stack) -> None:
    r, conn = await _exchange(stack, CHAT, _with(CHAT), **{"Content-Encoding": "x-rot13"})
    _assert_error(CHAT, r, 415, "Content-Encoding")
    await conn.close()


@pytest.mark.parametrize("value", [10**30, 2**63, 2**31, 0, -1, "many", 1.5])
@pytest.mark.parametrize("ep", ENDPOINTS)
async def test_out_of_range_output_limit_is_a_400_naming_it(
    stack: Stack, ep: Endpoint, value: object
) -> None:
    r, conn = await _exchange(stack, ep, _with(ep, **{ep.output_limit: value}))
    _assert_error(ep, r, 400, ep.output_limit)
    await _still_serves(conn, stack, ep)
    await conn.close()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_output_tokens", "16"),
        ("max_output_tokens", [16]),
        ("tools", "web_search"),
        ("tools", 5),
        ("tools", [5]),
        ("temperature", "hot"),
        ("stream", "yes"),
        ("metadata", {"a": 1}),
    ],
)
async def test_responses_field_of_the_wrong_type_is_a_400_naming_it(
    stack: Stack, field: str, value: object
) -> None:
    r, conn = await _exchange(stack, RESPONSES, _with(RESPONSES, **{field: value}))
    _assert_error(RESPONSES, r, 400, field)
    await conn.close()


SECRET = "SECRET-TEXT-4b1d"


@pytest.mark.parametrize(
    ("ep", "body"),
    [
        pytest.param(
            CHAT, {"model": "sim-small", "messages": [{"role": SECRET, "content": "hi"}]}, id="chat_role"
        ),
        pytest.param(
            CHAT,
            {"model": "sim-small", "messages": [{"role": "user", "content": [{"type": SECRET}]}]},
            id="chat_part_type",
        ),
        pytest.param(
            MESSAGES,
            {"model": "sim-small", "max_tokens": 5, "messages": [{"role": SECRET, "content": "hi"}]},
            id="messages_role",
        ),
        pytest.param(
            MESSAGES,
            {
                "model": "sim-small",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": SECRET}]}],
            },
            id="messages_block_type",
        ),
        pytest.param(
            RESPONSES,
            {"model": "sim-small", "input": [{"type": "message", "role": SECRET, "content": "hi"}]},
            id="responses_role",
        ),
        pytest.param(
            RESPONSES, {"model": "sim-small", "input": [{"type": SECRET}]}, id="responses_item_type"
        ),
        pytest.param(
            RESPONSES,
            {"model": "sim-small", "input": [{"role": "user", "content": [{"type": SECRET}]}]},
            id="responses_part_type",
        ),
        pytest.param(
            RESPONSES,
            {"model": "sim-small", "input": "hi", "text": {"format": {"type": SECRET}}},
            id="responses_format_type",
        ),
    ],
)
async def test_a_value_the_caller_sent_is_not_quoted_back(
    stack: Stack, ep: Endpoint, body: dict[str, Any]
) -> None:
    """msgspec's messages quote the offending value ("Invalid enum value
    'x'"), and the Responses translation named what it got: the caller's
    text came back in the error, and into the RequestFailed event with it."""
    r, conn = await _exchange(stack, ep, json.dumps(body).encode())
    await conn.close()
    assert r.status == 400, r.body
    assert SECRET.encode() not in r.body
    failed = [e for e in stack.events.events if isinstance(e, RequestFailed)]
    assert failed and all(SECRET not in e.reason for e in failed)


@pytest.mark.parametrize("fmt", ["json_object", 5, ["text"]])
async def test_responses_text_format_of_the_wrong_type_is_a_400_naming_text(
    stack: Stack, fmt: object
) -> None:
    """A non-object text.format went through to the provider (the simulator
    answered 500, the caller a 502)."""
    r, conn = await _exchange(stack, RESPONSES, _with(RESPONSES, text={"format": fmt}))
    await conn.close()
    _assert_error(RESPONSES, r, 400, "text")
