"""Every capability x every provider that claims it, through the gateway
over HTTP (an OpenAI client's /v1/chat/completions and /v1/embeddings), to
the simulated provider speaking that provider's own wire format.  The sim
validates each request as the provider would, so a wrong encoding fails
the cell; each test also checks the request landed on the provider's own
route, and the usage event the gateway recorded."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from adapters.base import Capability
from streams.events import UsageRecorded
from tests.conformance.stack import PROVIDERS, Stack, capabilities, chat_model, embed_model

PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGA"
    "hKmMIQAAAABJRU5ErkJggg=="
)
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "temperature": {"type": "number"}},
    "required": ["city", "temperature"],
    "additionalProperties": False,
}
# The sim's route prefix for each provider (where its request must land).
ROUTE = {
    "openai": "/v1/chat/completions",
    "anthropic": "/anthropic/v1/messages",
    "gemini": "/gemini/v1beta/models/",
    "vertex": "/vertex/v1/projects/sim-project/locations/us-central1/publishers/google/models/",
    "azure": "/azure/openai/deployments/",
    "bedrock": "/bedrock/model/",
    "cohere": "/cohere/v2/",
    "replicate": "/replicate/v1/",
    "voyage": "/voyage/v1/embeddings",
    "vertex-claude": "/vertex/v1/projects/sim-project/locations/us-central1/publishers/anthropic/models/",
}


# Providers whose usage does not split reasoning tokens out (Anthropic and
# Claude on Bedrock count thinking in output_tokens; Cohere in output_tokens).
NO_REASONING_COUNT = {"anthropic", "bedrock", "cohere", "vertex-claude"}


def route_of(provider: str) -> str:
    return ROUTE.get(provider, f"/{provider}/v1/")


def claims(capability: str) -> list[Any]:
    out = []
    for name in sorted(PROVIDERS):
        chat, embed, _ = PROVIDERS[name]
        claimed = capabilities(name)
        if capability == "errors":
            ok = True
        elif capability == "embeddings":
            ok = Capability.EMBEDDINGS in claimed and embed is not None
        else:
            ok = Capability(capability) in claimed and bool(chat)
        if ok:
            out.append(pytest.param(name, id=f"{capability}->{name}"))
    return out


def _reasoning_ext(provider: str) -> dict[str, Any]:
    # Providers whose thinking is a vendor knob rather than reasoning_effort.
    if provider == "cohere":
        return {"nexus_ext": {"cohere": {"thinking": {"type": "enabled", "token_budget": 2048}}}}
    if provider == "glm":
        return {"nexus_ext": {"glm": {"thinking": {"type": "enabled"}}}}
    return {}


async def post(stack: Stack, path: str, body: dict[str, Any]) -> tuple[int, Any, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(stack.url + path, json=body, headers={"Authorization": f"Bearer {stack.key}"}) as r,
    ):
        text = await r.text()
        rid = r.headers.get("x-nexus-request-id", "")
        try:
            return r.status, json.loads(text), rid
        except json.JSONDecodeError:
            return r.status, text, rid


def sse(text: str) -> tuple[list[dict[str, Any]], bool]:
    """(the data objects, whether [DONE] arrived)."""
    frames, done = [], False
    for block in text.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                data = line[6:]
                if data == "[DONE]":
                    done = True
                else:
                    frames.append(json.loads(data))
    return frames, done


def fold(frames: list[dict[str, Any]]) -> dict[str, Any]:
    content, reasoning, finish, usage = "", "", None, None
    calls: dict[int, dict[str, str]] = {}
    for f in frames:
        assert f["object"] == "chat.completion.chunk", f
        if f.get("usage"):
            usage = f["usage"]
        for c in f["choices"]:
            d = c["delta"]
            content += d.get("content") or ""
            reasoning += d.get("reasoning_content") or ""
            for tc in d.get("tool_calls") or ():
                call = calls.setdefault(tc["index"], {"id": "", "name": "", "arguments": ""})
                call["id"] = tc.get("id") or call["id"]
                fn = tc.get("function") or {}
                call["name"] = fn.get("name") or call["name"]
                call["arguments"] += fn.get("arguments") or ""
            finish = c.get("finish_reason") or finish
    return {"content": content, "reasoning": reasoning, "finish": finish, "usage": usage, "calls": calls}


async def last_request(stack: Stack) -> Any:
    return stack.sim.state.recorder.snapshot()["requests"][-1]


def usage_event(stack: Stack, rid: str) -> UsageRecorded:
    found = [e for e in stack.events.of(rid) if isinstance(e, UsageRecorded)]
    assert len(found) == 1, stack.events.types(rid)
    return found[0]


def chat(provider: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": chat_model(provider),
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        **extra,
    }


# --- the cases ---------------------------------------------------------------------------------


async def case_text(stack: Stack, provider: str) -> None:
    status, body, rid = await post(stack, "/chat/completions", chat(provider, max_tokens=64))
    assert status == 200, body
    assert body["object"] == "chat.completion"
    msg = body["choices"][0]["message"]
    assert msg["role"] == "assistant" and msg["content"], body
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    seen = await last_request(stack)
    assert seen.path.startswith(route_of(provider)), seen.path
    ev = usage_event(stack, rid)
    assert ev.provider == provider
    if provider != "replicate":  # Replicate streams report no tokens; unary does
        assert (ev.usage.prompt_tokens, ev.usage.completion_tokens) == (
            usage["prompt_tokens"],
            usage["completion_tokens"],
        )
    assert not ev.estimated


async def case_stream(stack: Stack, provider: str) -> None:
    body = chat(provider, stream=True, stream_options={"include_usage": True})
    status, text, rid = await post(stack, "/chat/completions", body)
    assert status == 200, text
    frames, done = sse(text)
    assert done, text[-300:]
    out = fold(frames)
    assert out["content"] and out["finish"] == "stop", out
    seen = await last_request(stack)
    assert seen.path.startswith(route_of(provider)), seen.path
    ev = usage_event(stack, rid)
    assert ev.usage.completion_tokens > 0
    if provider != "replicate":
        assert out["usage"] and out["usage"]["completion_tokens"] == ev.usage.completion_tokens


async def _tool_turns(stack: Stack, provider: str, stream: bool) -> None:
    body = chat(provider, tools=[WEATHER], max_tokens=256)
    if stream:
        status, text, _ = await post(stack, "/chat/completions", {**body, "stream": True})
        assert status == 200, text
        frames, done = sse(text)
        assert done
        out = fold(frames)
        call = out["calls"][0]
        finish = out["finish"]
    else:
        status, resp, _ = await post(stack, "/chat/completions", body)
        assert status == 200, resp
        tc = resp["choices"][0]["message"]["tool_calls"][0]
        assert tc["type"] == "function"
        call = {"id": tc["id"], "name": tc["function"]["name"], "arguments": tc["function"]["arguments"]}
        finish = resp["choices"][0]["finish_reason"]
    assert finish == "tool_calls"
    assert call["name"] == "get_weather" and call["id"]
    assert json.loads(call["arguments"]) == {"city": "Paris"}
    # The second turn carries the call and its result back in the
    # provider's format (the sim checks they pair up).
    turn2 = chat(provider, tools=[WEATHER], max_tokens=256)
    turn2["messages"] += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call["id"], "content": '{"temperature": 21}'},
    ]
    status, resp, _ = await post(stack, "/chat/completions", turn2)
    assert status == 200, resp
    assert resp["choices"][0]["message"]["content"].startswith("tool result received"), resp


async def case_tools(stack: Stack, provider: str) -> None:
    await _tool_turns(stack, provider, stream=False)


async def case_tools_stream(stack: Stack, provider: str) -> None:
    await _tool_turns(stack, provider, stream=True)


async def case_vision(stack: Stack, provider: str) -> None:
    content = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": PIXEL}},
    ]
    status, body, _ = await post(
        stack,
        "/chat/completions",
        {"model": chat_model(provider), "messages": [{"role": "user", "content": content}]},
    )
    assert status == 200, body
    assert body["choices"][0]["message"]["content"].startswith("saw 1 image"), body


async def case_json_schema(stack: Stack, provider: str) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "weather", "schema": SCHEMA, "strict": True}}
    status, body, _ = await post(
        stack, "/chat/completions", chat(provider, response_format=fmt, max_tokens=256)
    )
    assert status == 200, body
    choice = body["choices"][0]
    assert json.loads(choice["message"]["content"]) == {"city": "Paris", "temperature": 21.5}
    assert choice["finish_reason"] == "stop"


async def case_reasoning(stack: Stack, provider: str) -> None:
    body = chat(provider, reasoning_effort="high", max_tokens=20000, **_reasoning_ext(provider))
    status, resp, rid = await post(stack, "/chat/completions", body)
    assert status == 200, resp
    usage = resp["usage"]
    if provider != "openai":  # OpenAI reports reasoning tokens, never the text
        assert resp["choices"][0]["message"]["reasoning_content"].startswith("considering"), resp
    event = usage_event(stack, rid).usage
    if provider in NO_REASONING_COUNT:
        # Thinking is billed inside output_tokens and never reported apart.
        assert "completion_tokens_details" not in usage and event.reasoning_tokens == 0
    else:
        assert usage["completion_tokens_details"]["reasoning_tokens"] > 0, usage
        assert event.reasoning_tokens == usage["completion_tokens_details"]["reasoning_tokens"]


async def case_embeddings(stack: Stack, provider: str) -> None:
    status, body, rid = await post(
        stack, "/embeddings", {"model": embed_model(provider), "input": ["hello world", "nexus gateway"]}
    )
    assert status == 200, body
    assert body["object"] == "list" and [d["index"] for d in body["data"]] == [0, 1]
    assert all(d["object"] == "embedding" and len(d["embedding"]) >= 8 for d in body["data"])
    assert body["data"][0]["embedding"] != body["data"][1]["embedding"]
    seen = await last_request(stack)
    expected = "/v1/embeddings" if provider == "openai" else route_of(provider)
    assert seen.path.startswith(expected), seen.path
    assert usage_event(stack, rid).usage.prompt_tokens > 0


async def case_errors(stack: Stack, provider: str) -> None:
    chat_name, _, _ = PROVIDERS[provider]
    if chat_name:
        body = chat(provider)
        body["messages"][0]["content"] = "sim:fail=429 please"
        path = "/chat/completions"
    else:
        body, path = {"model": embed_model(provider), "input": "sim:fail=429"}, "/embeddings"
    status, resp, _ = await post(stack, path, body)
    assert status == 429, resp
    assert resp["error"]["code"] == "rate_limited" and resp["error"]["type"] == "rate_limit_error"
    # An upstream 5xx is the provider's failure, reported as 502.
    body = chat(provider) if chat_name else {"model": embed_model(provider), "input": "x"}
    if chat_name:
        body["messages"][0]["content"] = "sim:fail=500"
    else:
        body["input"] = "sim:fail=500"
    status, resp, _ = await post(stack, path, body)
    assert status == 502 and resp["error"]["code"] == "upstream_error", resp
    if chat_name and Capability.STREAM in capabilities(provider):
        body = chat(provider, stream=True)
        body["messages"][0]["content"] = "sim:error_after=2 tell me"
        status, text, rid = await post(stack, path, body)
        assert status == 200
        frames, done = sse(text)
        assert not done, "a failed stream must not end with [DONE]"
        assert "error" in frames[-1] and frames[-1]["error"]["code"] == "upstream_error", frames[-1]
        assert fold(frames[:-1])["content"], "the text before the failure was delivered"
        assert "RequestFailed" in stack.events.types(rid)


CASES: dict[str, Callable[[Stack, str], Awaitable[None]]] = {
    "text": case_text,
    "stream": case_stream,
    "tools": case_tools,
    "tools+stream": case_tools_stream,
    "vision": case_vision,
    "json_schema": case_json_schema,
    "reasoning": case_reasoning,
    "embeddings": case_embeddings,
    "errors": case_errors,
}

PARAMS = [pytest.param(capability, p.values[0], id=p.id) for capability in CASES for p in claims(capability)]


@pytest.mark.parametrize(("capability", "provider"), PARAMS)
async def test_capability(stack: Stack, capability: str, provider: str, record_property: Any) -> None:
    record_property("cell", (provider, capability))
    await CASES[capability](stack, provider)
