"""Every bad input gets its status and an OpenAI-shaped error, with a
request id, and never a stack trace; failures leave a RequestFailed event."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import openai
import pytest

from ingress.gateway import create_app, start_gateway
from streams.events import RequestFailed
from tests.gateway.conftest import Keys, Stack, make_stack

CHAT = {"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Case:
    status: int
    code: str
    body: bytes | dict[str, Any] | None = None
    key: str | None = "full"  # which key (attribute of Keys), or None for no key
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"
    path: str = "/v1/chat/completions"
    param: str | None = None
    retry_after: str | None = None


CASES = [
    pytest.param(
        Case(400, "invalid_json", body=b'{"model": "sim-small", "messages": ['), id="malformed_json->400"
    ),
    pytest.param(Case(400, "invalid_request", body=b"[1, 2]"), id="json_not_an_object->400"),
    pytest.param(
        Case(400, "missing_model", body={"messages": CHAT["messages"]}, param="model"),
        id="missing_model->400",
    ),
    pytest.param(
        Case(400, "invalid_request", body={"model": "sim-small", "messages": "hi"}, param="messages"),
        id="messages_wrong_type->400",
    ),
    pytest.param(
        Case(400, "invalid_request", body={"model": "sim-small", "messages": []}, param="messages"),
        id="messages_empty->400",
    ),
    pytest.param(
        Case(404, "model_not_found", body={**CHAT, "model": "no-such-model"}, param="model"),
        id="unknown_model->404",
    ),
    pytest.param(
        Case(404, "model_not_found", body={**CHAT, "model": "embedder"}, param="model"),
        id="embedding_model_on_chat->404",
    ),
    pytest.param(Case(401, "missing_api_key", body=CHAT, key=None), id="no_key->401"),
    pytest.param(
        Case(
            401, "invalid_api_key", body=CHAT, key=None, headers={"Authorization": "Bearer nvk_" + "0" * 64}
        ),
        id="unknown_key->401",
    ),
    pytest.param(
        Case(401, "invalid_api_key", body=CHAT, key=None, headers={"Authorization": "Bearer sk-nope"}),
        id="malformed_key->401",
    ),
    pytest.param(Case(401, "key_expired", body=CHAT, key="expired"), id="expired_key->401"),
    pytest.param(Case(401, "key_revoked", body=CHAT, key="revoked"), id="revoked_key->401"),
    pytest.param(
        Case(403, "model_not_allowed", body={**CHAT, "model": "sim-large"}, key="limited", param="model"),
        id="model_not_allowed->403",
    ),
    pytest.param(
        Case(413, "request_too_large", body={**CHAT, "pad": "x" * 70_000}), id="body_over_limit->413"
    ),
    pytest.param(
        Case(502, "upstream_error", body={**CHAT, "model": "flaky"}, retry_after="1"),
        id="upstream_503->502_keeps_retry_after",
    ),
    pytest.param(Case(400, "invalid_request", body={**CHAT, "model": "picky"}), id="upstream_400->400"),
    pytest.param(
        Case(429, "rate_limited", body={**CHAT, "model": "limited"}, retry_after="7"),
        id="upstream_429->429_with_retry_after",
    ),
    pytest.param(Case(502, "upstream_error", body={**CHAT, "model": "gone"}), id="upstream_unreachable->502"),
    pytest.param(Case(504, "timeout", body={**CHAT, "model": "sleepy"}), id="upstream_timeout->504"),
    pytest.param(
        Case(502, "upstream_error", body={**CHAT, "model": "flaky", "stream": True}, retry_after="1"),
        id="upstream_503_before_stream->502",
    ),
    pytest.param(
        Case(400, "no_compatible_provider", body={**CHAT, "model": "claude"}),
        id="provider_without_codec->400",
    ),
    pytest.param(Case(404, "unknown_url", body=CHAT, path="/v1/nope"), id="unknown_route->404"),
    pytest.param(Case(405, "method_not_allowed", method="GET", key=None), id="wrong_method->405"),
    pytest.param(
        Case(401, "missing_api_key", method="GET", path="/v1/models", key=None), id="models_no_key->401"
    ),
]


def _key(keys: Keys, which: str | None) -> dict[str, str]:
    return {} if which is None else {"Authorization": f"Bearer {getattr(keys, which)}"}


@pytest.mark.parametrize("case", CASES)
async def test_bad_input_gets_status_and_openai_error(stack: Stack, case: Case) -> None:
    data = case.body if isinstance(case.body, bytes) or case.body is None else None
    headers = {**_key(stack.keys, case.key), **case.headers}
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            case.method,
            stack.gateway.url.removesuffix("/v1") + case.path,
            data=data,
            json=case.body if isinstance(case.body, dict) else None,
            headers=headers,
        ) as r,
    ):
        body = await r.json(content_type=None)
        assert r.status == case.status, body
        assert r.headers["Content-Type"].startswith("application/json")
        request_id = r.headers["x-nexus-request-id"]
        retry_after = r.headers.get("Retry-After")
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "code", "param"}
    assert body["error"]["code"] == case.code
    assert body["error"]["param"] == case.param
    assert body["error"]["message"] and "Traceback" not in body["error"]["message"]
    assert retry_after == case.retry_after
    if case.status in (404, 405) and case.code in ("unknown_url", "method_not_allowed"):
        return  # no API request happened: nothing to account
    failed = [e for e in stack.events.of(request_id) if isinstance(e, RequestFailed)]
    assert len(failed) == 1 and failed[0].status == case.status and failed[0].error_code == case.code


async def test_no_key_ever_appears_in_errors_or_events(stack: Stack) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{stack.url}/chat/completions",
            json=CHAT,
            headers={"Authorization": f"Bearer {stack.keys.revoked}"},
        ) as r,
    ):
        text = await r.text()
    assert stack.keys.revoked not in text
    assert all(stack.keys.revoked.encode() not in repr(e).encode() for e in stack.events.events)


async def test_body_over_limit_is_refused_while_reading_without_content_length(stack: Stack) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"model": "sim-small", "messages": [], "pad": "'
        for _ in range(20):
            yield b"x" * 8192
        yield b'"}'

    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{stack.url}/chat/completions", data=chunks(), headers=_key(stack.keys, "full")) as r,
    ):
        body = await r.json()
        assert r.status == 413 and body["error"]["code"] == "request_too_large"
        assert "x-nexus-request-id" in r.headers
    assert stack.sim.state.recorder.count == 0


async def test_request_id_on_every_response(stack: Stack) -> None:
    seen: set[str] = set()
    async with aiohttp.ClientSession() as http:
        for method, path, kw in [
            ("GET", "/healthz", {}),
            ("GET", "/metrics", {}),
            ("GET", "/v1/models", {"headers": _key(stack.keys, "full")}),
            ("POST", "/v1/chat/completions", {"json": CHAT, "headers": _key(stack.keys, "full")}),
            (
                "POST",
                "/v1/chat/completions",
                {"json": {**CHAT, "stream": True}, "headers": _key(stack.keys, "full")},
            ),
            ("POST", "/v1/chat/completions", {"json": CHAT}),
            ("GET", "/nowhere", {}),
        ]:
            async with http.request(method, stack.gateway.url.removesuffix("/v1") + path, **kw) as r:
                await r.read()
                rid = r.headers.get("x-nexus-request-id")
                assert rid, (method, path)
                seen.add(rid)
    assert len(seen) == 7  # unique per response


async def test_overload_sheds_with_429_and_retry_after() -> None:
    stack = await make_stack(max_inflight=2)
    try:
        async with aiohttp.ClientSession() as http:
            slow = {**CHAT, "model": "sim-small"}
            headers = _key(stack.keys, "full")
            # Two requests occupy the gate (the sim holds them 500 ms)...
            stack.sim.state.settings = stack.sim.state.settings.__class__(
                latency_ms=500, api_key="sk-sim-test"
            )
            busy = [
                asyncio.create_task(http.post(f"{stack.url}/chat/completions", json=slow, headers=headers))
                for _ in range(2)
            ]
            await asyncio.sleep(0.2)
            # ...so the third is shed at once.
            async with http.post(f"{stack.url}/chat/completions", json=slow, headers=headers) as r:
                body = await r.json()
                assert r.status == 429 and r.headers["Retry-After"] == "1"
                assert body["error"]["code"] == "overloaded"
            for resp in await asyncio.gather(*busy):
                assert resp.status == 200
                resp.release()
    finally:
        await stack.gateway.close()
        await stack.sim.close()


async def test_unexpected_error_is_a_clean_500(stack: Stack) -> None:
    class Broken:
        def emit(self, event: object) -> None:
            raise RuntimeError("secret internals: /etc/passwd")

    app = create_app(stack.snapshot, Broken(), env={"SIM_TEST_KEY": "sk-sim-test"})
    server = await start_gateway(app)
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{server.url}/chat/completions", json=CHAT, headers=_key(stack.keys, "full")) as r,
        ):
            body = await r.json()
            assert r.status == 500 and "x-nexus-request-id" in r.headers
    finally:
        await server.close()
    assert body["error"]["code"] == "internal_error"
    assert "secret internals" not in str(body) and "Traceback" not in str(body)


async def test_sdk_raises_typed_errors(stack: Stack) -> None:
    async with openai.AsyncOpenAI(base_url=stack.url, api_key=stack.keys.limited, max_retries=0) as c:
        with pytest.raises(openai.PermissionDeniedError) as denied:
            await c.chat.completions.create(model="sim-large", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.NotFoundError):
            await c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert denied.value.code == "model_not_allowed"
