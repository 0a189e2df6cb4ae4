"""The simulated provider over real HTTP: deterministic OpenAI-format
answers, usage, latency and failure injection, validation and the request
record tests rely on."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest

from nexus.sim import SimServer, SimSettings, start_sim
from nexus.sim.cli import _parser, settings_from_args

CHAT = {"model": "sim-small", "messages": [{"role": "user", "content": "What is Nexus?"}]}


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    s = await start_sim(SimSettings())
    yield s
    await s.close()


async def _post(
    sim: SimServer, body: object, headers: dict[str, str] | None = None, path: str = "/chat/completions"
):
    async with (
        aiohttp.ClientSession() as http,
        http.post(sim.url + path, json=body, headers=headers or {}) as r,
    ):
        return r.status, dict(r.headers), await r.read()


async def test_openai_sdk_unary_is_deterministic_with_usage(sim: SimServer) -> None:
    async with openai.AsyncOpenAI(base_url=sim.url, api_key="unused", max_retries=0) as c:
        a = await c.chat.completions.create(**CHAT)
        b = await c.chat.completions.create(**CHAT)
        other = await c.chat.completions.create(
            model="sim-small", messages=[{"role": "user", "content": "else"}]
        )
    assert a.choices[0].message.content == b.choices[0].message.content != other.choices[0].message.content
    assert a.object == "chat.completion" and a.choices[0].message.role == "assistant"
    words = a.choices[0].message.content.split()
    assert 8 <= len(words) <= 24
    assert a.usage is not None and a.usage.completion_tokens == len(words)
    # 14 characters -> 4 tokens, + 4 per message + 3 per request
    assert a.usage.prompt_tokens == 11 and a.usage.total_tokens == 11 + len(words)


async def test_openai_sdk_stream_ends_with_a_usage_chunk(sim: SimServer) -> None:
    async with openai.AsyncOpenAI(base_url=sim.url, api_key="unused", max_retries=0) as c:
        unary = await c.chat.completions.create(**CHAT)
        stream = await c.chat.completions.create(**CHAT, stream=True, stream_options={"include_usage": True})
        chunks = [ch async for ch in stream]
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == unary.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage == unary.usage
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"


async def test_stream_without_include_usage_has_no_usage_chunk(sim: SimServer) -> None:
    status, _, raw = await _post(sim, {**CHAT, "stream": True})
    frames = [f for f in raw.decode().split("\n\n") if f]
    assert status == 200 and frames[-1] == "data: [DONE]"
    assert all('"usage"' not in f for f in frames)


async def test_max_tokens_truncates_with_finish_reason_length(sim: SimServer) -> None:
    status, _, raw = await _post(sim, {**CHAT, "max_tokens": 3})
    body = json.loads(raw)
    assert status == 200 and len(body["choices"][0]["message"]["content"].split()) == 3
    assert body["choices"][0]["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 3


@pytest.mark.parametrize(
    ("body", "param"),
    [
        pytest.param({"messages": CHAT["messages"]}, "model", id="missing_model"),
        pytest.param({"model": "m", "messages": "hi"}, "messages", id="messages_not_a_list"),
        pytest.param({"model": "m", "messages": []}, "messages", id="messages_empty"),
        pytest.param(
            {"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "messages", id="bad_role"
        ),
        pytest.param({**CHAT, "max_tokens": 0}, "max_tokens", id="max_tokens_zero"),
    ],
)
async def test_malformed_requests_get_openai_shaped_400(sim: SimServer, body: dict, param: str) -> None:
    status, _, raw = await _post(sim, body)
    err = json.loads(raw)["error"]
    assert status == 400 and set(err) == {"message", "type", "param", "code"} and err["param"] == param


async def test_invalid_json_is_a_400(sim: SimServer) -> None:
    async with aiohttp.ClientSession() as http, http.post(f"{sim.url}/chat/completions", data=b"{nope") as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("headers", "status", "retry_after"),
    [
        pytest.param({"x-sim-fail-status": "503"}, 503, "1", id="503"),
        pytest.param({"x-sim-fail-status": "429", "x-sim-retry-after": "9"}, 429, "9", id="429_retry_after"),
        pytest.param({"x-sim-fail-status": "500"}, 500, None, id="500"),
        pytest.param({"x-sim-fail-status": "200"}, 400, None, id="not_an_error_status->400"),
    ],
)
async def test_failure_injection_by_header(
    sim: SimServer, headers: dict, status: int, retry_after: str | None
) -> None:
    got, resp_headers, raw = await _post(sim, CHAT, headers)
    assert got == status and "error" in json.loads(raw)
    assert resp_headers.get("Retry-After") == retry_after


async def test_failure_injection_by_settings_every_nth() -> None:
    sim = await start_sim(SimSettings(fail_status=502, fail_every=3))
    try:
        statuses = [(await _post(sim, CHAT))[0] for _ in range(6)]
    finally:
        await sim.close()
    assert statuses == [200, 200, 502, 200, 200, 502]


async def test_dropped_stream_is_cut_mid_body(sim: SimServer) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{sim.url}/chat/completions", json={**CHAT, "stream": True}, headers={"x-sim-drop-after": "2"}
        ) as r,
    ):
        assert r.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()


async def test_latency_and_ttft(sim: SimServer) -> None:
    t0 = time.perf_counter()
    status, _, _ = await _post(sim, CHAT, {"x-sim-delay-ms": "150", "x-sim-ttft-ms": "100"})
    assert status == 200 and time.perf_counter() - t0 >= 0.25


async def test_hang_never_answers(sim: SimServer) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as http:
        with pytest.raises(asyncio.TimeoutError):
            await http.post(f"{sim.url}/chat/completions", json=CHAT, headers={"x-sim-hang": "1"})


async def test_requests_are_recorded_and_resettable(sim: SimServer) -> None:
    await _post(
        sim, {**CHAT, "future_field": 1}, {"Authorization": "Bearer sk-secret", "x-sim-delay-ms": "0"}
    )
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sim.root}/_sim/requests") as r:
            seen = await r.json()
        assert seen["count"] == 1
        rec = seen["requests"][0]
        assert rec["body"] == {**CHAT, "future_field": 1} and rec["path"] == "/v1/chat/completions"
        assert "authorization" not in {k.lower() for k in rec["headers"]} and "sk-secret" not in json.dumps(
            seen
        )
        async with http.delete(f"{sim.root}/_sim/requests") as r:
            assert r.status == 204
        async with http.get(f"{sim.root}/_sim/requests") as r:
            assert (await r.json()) == {"count": 0, "requests": []}


async def test_api_key_is_enforced_when_configured() -> None:
    sim = await start_sim(SimSettings(api_key="sk-right"))
    try:
        assert (await _post(sim, CHAT, {"Authorization": "Bearer sk-wrong"}))[0] == 401
        assert (await _post(sim, CHAT, {"Authorization": "Bearer sk-right"}))[0] == 200
    finally:
        await sim.close()


async def test_embeddings_and_models(sim: SimServer) -> None:
    async with openai.AsyncOpenAI(base_url=sim.url, api_key="unused", max_retries=0) as c:
        a = await c.embeddings.create(model="sim-embed", input=["hello", "world"], dimensions=16)
        b = await c.embeddings.create(model="sim-embed", input="hello", dimensions=16)
        models = [m.id async for m in c.models.list()]
    assert len(a.data) == 2 and len(a.data[0].embedding) == 16
    assert a.data[0].embedding == pytest.approx(b.data[0].embedding)
    assert sum(v * v for v in a.data[0].embedding) == pytest.approx(1.0)
    assert a.usage.prompt_tokens == 4
    assert models == ["sim-small", "sim-large", "sim-embed"]


def test_cli_flags_become_settings() -> None:
    args = _parser().parse_args(
        ["--latency-ms", "5", "--ttft-ms", "7", "--tokens-per-s", "50", "--fail-status", "503"]
    )
    s = settings_from_args(args)
    assert (s.latency_ms, s.ttft_ms, s.tokens_per_s, s.fail_status, s.fail_every) == (5, 7, 50, 503, 1)
    with pytest.raises(SystemExit):
        settings_from_args(_parser().parse_args(["--fail-status", "200"]))


@pytest.mark.parametrize("properties", [5, "x", ["a"], None])
async def test_a_tool_schema_whose_properties_are_not_an_object_is_no_crash(
    sim: SimServer, properties: object
) -> None:
    """The gateway passes tool schemas through; the simulator answered 500
    (and the gateway a 502) to one with non-object properties."""
    tool = {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "object", "properties": properties}},
    }
    status, _, raw = await _post(sim, {**CHAT, "tools": [tool]})
    assert status == 200, raw
    assert json.loads(raw)["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == "{}"
