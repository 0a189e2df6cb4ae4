"""The ingress formats' own rules, over HTTP: /v1/messages accepts the
virtual key as x-api-key and answers errors in Anthropic's shape; an
Anthropic client reaching an Anthropic provider is a passthrough with only
the model rewritten; /v1/models answers in Anthropic's shape when
anthropic-version is sent."""

from __future__ import annotations

from typing import Any

import aiohttp
import anthropic
import msgspec
import pytest

from streams.events import RequestCompleted, RequestReceived, UpstreamResult, UsageRecorded
from tests.conformance.stack import PROVIDERS, Stack, chat_model, embed_model


async def _post(stack: Stack, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(stack.url + path, json=body, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def test_messages_same_format_is_a_passthrough(stack: Stack) -> None:
    body = {
        "model": chat_model("anthropic"),
        "max_tokens": 300,
        "top_k": 5,
        "metadata": {"user_id": "u-1"},
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}],
    }
    status, answer = await _post(stack, "/messages", body, {"x-api-key": stack.key})
    assert status == 200, answer
    seen = stack.sim.state.recorder.snapshot()["requests"][-1]
    assert seen.path == "/anthropic/v1/messages"
    assert seen.body == {**body, "model": "claude-sonnet-4-5"}  # byte-for-byte but the model
    assert answer["type"] == "message" and answer["content"]
    assert answer["model"] == chat_model("anthropic")  # the name asked for, not the provider's id


async def test_messages_errors_are_anthropic_shaped(stack: Stack) -> None:
    ok = {"model": chat_model("openai"), "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    status, answer = await _post(stack, "/messages", ok, {})
    assert status == 401 and answer["type"] == "error"
    assert answer["error"]["type"] == "authentication_error" and "virtual key" in answer["error"]["message"]
    status, answer = await _post(stack, "/messages", {**ok, "model": "nope"}, {"x-api-key": stack.key})
    assert (status, answer["error"]["type"]) == (404, "not_found_error")
    status, answer = await _post(stack, "/messages", {**ok, "max_tokens": "ten"}, {"x-api-key": stack.key})
    assert (status, answer["type"], answer["error"]["type"]) == (400, "error", "invalid_request_error")
    # The x-api-key carrier is for /v1/messages only.
    status, answer = await _post(
        stack, "/chat/completions", {"model": chat_model("openai"), "messages": []}, {"x-api-key": stack.key}
    )
    assert status == 401 and answer["error"]["code"] == "missing_api_key"


async def test_models_in_anthropic_shape_with_anthropic_version(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(
            stack.url + "/models", headers={"x-api-key": stack.key, "anthropic-version": "2023-06-01"}
        ) as r:
            anthropic = await r.json()
        async with http.get(stack.url + "/models", headers={"Authorization": f"Bearer {stack.key}"}) as r:
            openai = await r.json()
    assert anthropic["has_more"] is False and anthropic["first_id"] == anthropic["data"][0]["id"]
    assert {m["type"] for m in anthropic["data"]} == {"model"}
    assert openai["object"] == "list" and {m["object"] for m in openai["data"]} == {"model"}
    assert {m["id"] for m in anthropic["data"]} == {m["id"] for m in openai["data"]}


async def test_embeddings_token_arrays_refused_clearly_where_the_provider_takes_text(stack: Stack) -> None:
    status, answer = await _post(
        stack,
        "/embeddings",
        {"model": "gemini-embed", "input": [[1, 2, 3]]},
        {"Authorization": f"Bearer {stack.key}"},
    )
    assert status == 400 and "token" in answer["error"]["message"], answer


def _models(value: Any) -> list[Any]:
    """Every model name an answer (or a stream event) shows its caller: the
    top-level ``model``, an Anthropic stream's ``message.model``, a
    Responses event's ``response.model``."""
    if not isinstance(value, dict):
        return []
    found = [value["model"]] if "model" in value else []
    for inner in ("message", "response"):
        if isinstance(value.get(inner), dict) and "model" in value[inner]:
            found.append(value[inner]["model"])
    return found


def _events(text: str) -> list[Any]:
    out = []
    for line in text.splitlines():
        if line.startswith("data:") and line[5:].strip() != "[DONE]":
            out.append(msgspec.json.decode(line[5:].strip()))
    return out


_CHAT = [{"role": "user", "content": "hello"}]


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/chat/completions", {"messages": _CHAT}),
        ("/messages", {"max_tokens": 50, "messages": _CHAT}),
        ("/responses", {"input": "hello"}),
    ],
    ids=["chat", "messages", "responses"],
)
async def test_answers_name_the_model_the_caller_asked_for(
    stack: Stack, provider: str, stream: bool, path: str, body: dict[str, Any]
) -> None:
    # Same-format passthroughs (OpenAI chat to OpenAI, Messages to
    # Anthropic, native Responses) relay the provider's bytes: its model id
    # must not reach the caller there either.
    asked = chat_model(provider)
    headers = {"Authorization": f"Bearer {stack.key}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(stack.url + path, json={**body, "model": asked, "stream": stream}, headers=headers) as r,
    ):
        text = await r.text()
    assert r.status == 200, text
    shown = [m for doc in (_events(text) if stream else [msgspec.json.decode(text)]) for m in _models(doc)]
    assert shown and set(shown) == {asked}, shown
    assert PROVIDERS[provider][0] not in text


@pytest.mark.parametrize("provider", ["openai", "gemini"])
async def test_embeddings_name_the_model_the_caller_asked_for(stack: Stack, provider: str) -> None:
    status, answer = await _post(
        stack,
        "/embeddings",
        {"model": embed_model(provider), "input": "hello"},
        {"x-nexus-virtual-key": stack.key},
    )
    assert status == 200, answer
    assert answer["model"] == embed_model(provider) and answer["data"]


_PROMPT: list[Any] = [{"role": "user", "content": "How many tokens is this prompt, roughly?"}]
_SYSTEM = "Answer in one line."


def _ant(stack: Stack) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=stack.root, api_key=stack.key, max_retries=0)


async def test_count_tokens_asks_an_anthropic_provider(stack: Stack) -> None:
    async with _ant(stack) as client:
        raw = await client.messages.with_raw_response.count_tokens(
            model=chat_model("anthropic"), system=_SYSTEM, messages=_PROMPT
        )
        counted = await raw.parse()
        billed = await client.messages.create(
            model=chat_model("anthropic"), max_tokens=20, system=_SYSTEM, messages=_PROMPT
        )
    # The provider's own count: what the same prompt then bills.
    assert counted.input_tokens == billed.usage.input_tokens > 0
    assert raw.headers["x-nexus-token-count"] == "provider"
    seen = [r for r in stack.sim.state.recorder.snapshot()["requests"] if r.path.endswith("/count_tokens")]
    assert seen[-1].path == "/anthropic/v1/messages/count_tokens"
    assert seen[-1].body == {"model": "claude-sonnet-4-5", "system": _SYSTEM, "messages": _PROMPT}
    rid = raw.headers["x-nexus-request-id"]
    kinds = [type(e) for e in stack.events.of(rid)]
    assert kinds == [RequestReceived, UpstreamResult, RequestCompleted]  # a count bills nothing
    received = stack.events.of(rid)[0]
    assert isinstance(received, RequestReceived) and received.endpoint == "count_tokens"


async def test_count_tokens_is_estimated_for_other_providers(stack: Stack) -> None:
    before = stack.sim.state.recorder.count
    async with _ant(stack) as client:
        raw = await client.messages.with_raw_response.count_tokens(
            model=chat_model("openai"), system=_SYSTEM, messages=_PROMPT
        )
    assert (await raw.parse()).input_tokens > 10
    assert raw.headers["x-nexus-token-count"] == "estimated"
    assert stack.sim.state.recorder.count == before  # nothing left the gateway
    assert not [e for e in stack.events.of(raw.headers["x-nexus-request-id"]) if isinstance(e, UsageRecorded)]


async def test_count_tokens_errors_are_anthropic_shaped(stack: Stack) -> None:
    async with _ant(stack) as client:
        with pytest.raises(anthropic.NotFoundError) as missing:
            await client.messages.count_tokens(model="nope", messages=_PROMPT)
    assert missing.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "The model 'nope' does not exist."},
    }
    ok = {"model": chat_model("anthropic"), "messages": _PROMPT}
    status, answer = await _post(stack, "/messages/count_tokens", ok, {})
    assert status == 401 and answer["error"]["type"] == "authentication_error"
    status, answer = await _post(
        stack, "/messages/count_tokens", {"model": ok["model"]}, {"x-api-key": stack.key}
    )
    assert (status, answer["type"], answer["error"]["type"]) == (400, "error", "invalid_request_error")
    assert "messages" in answer["error"]["message"]


async def test_unknown_urls_and_methods_under_messages_are_anthropic_shaped(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            stack.url + "/messages/batches/x", json={}, headers={"x-api-key": stack.key}
        ) as r:
            assert r.status == 404
            assert await r.json() == {
                "type": "error",
                "error": {
                    "type": "not_found_error",
                    "message": "Unknown request URL: POST /v1/messages/batches/x.",
                },
            }
        async with http.get(stack.url + "/messages", headers={"x-api-key": stack.key}) as r:
            assert r.status == 405
            body = await r.json()
            assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
        # Elsewhere the OpenAI shape stays.
        async with http.post(stack.url + "/nope", json={}) as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "unknown_url"
