"""The ingress formats' own rules, over HTTP: /v1/messages accepts the
virtual key as x-api-key and answers errors in Anthropic's shape; an
Anthropic client reaching an Anthropic provider is a passthrough with only
the model rewritten; /v1/models answers in Anthropic's shape when
anthropic-version is sent."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.conformance.stack import Stack, chat_model


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
    assert answer["type"] == "message" and answer["model"] == "claude-sonnet-4-5"  # the provider's own answer


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
