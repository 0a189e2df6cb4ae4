"""Stream relaying: chunks reach the caller as the provider sends them, a
provider that drops mid-stream ends the caller's stream with an
OpenAI-shaped error frame, and either way the request is accounted."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import openai
import pytest

from nexus.sim import SimSettings
from streams.events import RequestCompleted, RequestFailed, UpstreamResult, UsageRecorded
from tests.gateway.conftest import Stack


def _auth(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.keys.full}"}


def _frames(raw: bytes) -> list[str]:
    return [f.removeprefix("data: ") for f in raw.decode().split("\n\n") if f]


async def test_dropped_upstream_stream_ends_with_an_error_frame(stack: Stack) -> None:
    body = {"model": "dropper", "stream": True, "messages": [{"role": "user", "content": "tell me a story"}]}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{stack.url}/chat/completions", json=body, headers=_auth(stack)) as r,
    ):
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        request_id = r.headers["x-nexus-request-id"]
        raw = await r.read()
    frames = _frames(raw)
    # role chunk + the 3 content chunks the provider sent before dying, then the error frame
    assert len(frames) == 5, frames
    contents = [json.loads(f)["choices"][0]["delta"].get("content") for f in frames[:4]]
    assert contents[0] == "" and all(contents[1:])
    error = json.loads(frames[-1])
    assert set(error) == {"error"} and error["error"]["code"] == "upstream_error"
    assert set(error["error"]) == {"message", "type", "code", "param"}
    assert "[DONE]" not in raw.decode()

    evs = stack.events.of(request_id)
    assert [type(e).__name__ for e in evs] == [
        "RequestReceived",
        "UpstreamResult",
        "UsageRecorded",
        "RequestFailed",
    ]
    upstream, usage, failed = evs[1], evs[2], evs[3]
    assert isinstance(upstream, UpstreamResult) and upstream.error_code == "upstream_error"
    # Tokens were generated before the drop: they are accounted (estimated).
    assert isinstance(usage, UsageRecorded) and usage.estimated and usage.usage.completion_tokens > 0
    assert isinstance(failed, RequestFailed) and failed.status == 502 and failed.stage == "stream"


async def test_provider_error_frame_mid_stream_is_relayed_as_ours(stack: Stack) -> None:
    body = {"model": "erring", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{stack.url}/chat/completions", json=body, headers=_auth(stack)) as r,
    ):
        request_id = r.headers["x-nexus-request-id"]
        raw = await r.read()
    frames = _frames(raw)
    assert len(frames) == 4  # role chunk, 2 content chunks, our error frame
    error = json.loads(frames[-1])["error"]
    assert error["code"] == "upstream_error" and "server had an error" not in error["message"]
    (failed,) = [e for e in stack.events.of(request_id) if isinstance(e, RequestFailed)]
    assert failed.status == 502 and failed.stage == "stream"


async def test_sdk_sees_a_dropped_stream_as_an_error(stack: Stack) -> None:
    async with openai.AsyncOpenAI(base_url=stack.url, api_key=stack.keys.full, max_retries=0) as c:
        stream = await c.chat.completions.create(
            model="dropper", stream=True, messages=[{"role": "user", "content": "x"}]
        )
        got: list[str] = []
        with pytest.raises(openai.APIError):
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    got.append(chunk.choices[0].delta.content)
    assert len(got) == 3


async def test_chunks_are_forwarded_as_they_arrive(stack: Stack) -> None:
    # 20 tokens/s: the provider spends about a second on the whole answer.
    stack.sim.state.settings = SimSettings(tokens_per_s=20, ttft_ms=100, api_key="sk-sim-test")
    body = {"model": "sim-small", "stream": True, "messages": [{"role": "user", "content": "slowly"}]}
    arrivals: list[float] = []
    start = time.perf_counter()
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{stack.url}/chat/completions", json=body, headers=_auth(stack)) as r,
    ):
        buf = b""
        async for data in r.content.iter_any():
            buf += data
            while b"\n\n" in buf:
                frame, buf = buf.split(b"\n\n", 1)
                if b'"content":"' in frame and b'"content":""' not in frame:
                    arrivals.append(time.perf_counter() - start)
    assert len(arrivals) >= 8
    total = arrivals[-1]
    assert arrivals[0] < 0.4 and total > 0.4  # the first token came long before the last
    (done,) = [e for e in stack.events.events if isinstance(e, RequestCompleted)]
    assert done.ttft_ms is not None and 100 <= done.ttft_ms < 400
    (up,) = [e for e in stack.events.events if isinstance(e, UpstreamResult)]
    assert up.ttft_ms is not None and up.ttft_ms >= 100 and up.upstream_ms >= total * 1000 * 0.8


async def test_caller_hanging_up_mid_stream_is_recorded(stack: Stack) -> None:
    stack.sim.state.settings = SimSettings(tokens_per_s=20, api_key="sk-sim-test")
    body = {"model": "sim-small", "stream": True, "messages": [{"role": "user", "content": "bye"}]}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{stack.url}/chat/completions", json=body, headers=_auth(stack)) as r,
    ):
        request_id = r.headers["x-nexus-request-id"]
        await r.content.readany()
    for _ in range(50):  # the gateway notices at its next write
        if any(isinstance(e, RequestFailed) for e in stack.events.of(request_id)):
            break
        await asyncio.sleep(0.05)
    (failed,) = [e for e in stack.events.of(request_id) if isinstance(e, RequestFailed)]
    assert failed.status == 499 and failed.error_code == "client_closed"
    assert any(isinstance(e, UsageRecorded) for e in stack.events.of(request_id))


async def test_stream_stalling_mid_stream_gets_a_timeout_frame(stack: Stack) -> None:
    # The provider sends its first chunk, then stalls past the read timeout (0.3 s).
    stack.sim.state.settings = SimSettings(ttft_ms=1500, api_key="sk-sim-test")
    body = {"model": "impatient", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{stack.url}/chat/completions", json=body, headers=_auth(stack)) as r,
    ):
        assert r.status == 200
        request_id = r.headers["x-nexus-request-id"]
        raw = await r.read()
    frames = _frames(raw)
    assert json.loads(frames[0])["choices"][0]["delta"]["role"] == "assistant"
    assert json.loads(frames[-1])["error"]["code"] == "timeout"
    (failed,) = [e for e in stack.events.of(request_id) if isinstance(e, RequestFailed)]
    assert failed.status == 504 and failed.stage == "stream"
