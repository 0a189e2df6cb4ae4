"""The official OpenAI SDK, pointed at the gateway, gets completions (unary
and streamed) with usage; the events the gateway emitted carry the tenant,
the tokens the SDK saw and the cost from the model's price."""

from __future__ import annotations

import httpx
import openai
import pytest

from streams.events import RequestCompleted, RequestReceived, UpstreamResult, UsageRecorded
from tests.gateway.conftest import Stack


def client(stack: Stack, key: str | None = None) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=stack.url, api_key=key or stack.keys.full, max_retries=0)


async def test_sdk_unary_completion_with_usage_and_events(stack: Stack) -> None:
    async with client(stack) as c:
        raw = await c.chat.completions.with_raw_response.create(
            model="sim-small", messages=[{"role": "user", "content": "Say hello to Nexus"}]
        )
    completion = raw.parse()
    request_id = raw.headers["x-nexus-request-id"]
    assert raw.headers["x-nexus-routed-provider"] == "sim"
    assert raw.headers["x-nexus-routed-model"] == "sim-small-v1"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens == len(completion.choices[0].message.content.split())

    # The provider got the provider model id, and the credential from the env.
    seen = stack.sim.state.recorder.snapshot()
    assert seen["count"] == 1
    assert seen["requests"][0].body["model"] == "sim-small-v1"

    assert stack.events.types(request_id) == [
        "RequestReceived",
        "UpstreamResult",
        "UsageRecorded",
        "RequestCompleted",
    ]
    evs = stack.events.of(request_id)
    for e in evs:
        assert (e.tenant.org_id, e.tenant.project_id, e.tenant.key_id, e.tenant.user_id) == (
            "acme",
            "web",
            "k-full",
            "alice",
        )
        assert e.node.kind == "gateway" and e.node.id == "gw-test"
    received = evs[0]
    assert isinstance(received, RequestReceived)
    assert received.requested_model == "sim-small" and received.stream is False
    assert received.body is not None and b"Say hello to Nexus" in (received.body.inline or b"")
    upstream = evs[1]
    assert isinstance(upstream, UpstreamResult) and upstream.status == 200 and upstream.provider == "sim"
    usage = evs[2]
    assert isinstance(usage, UsageRecorded)
    assert usage.usage.prompt_tokens == completion.usage.prompt_tokens
    assert usage.usage.completion_tokens == completion.usage.completion_tokens
    assert usage.usage.total_tokens == completion.usage.total_tokens
    assert usage.priced and not usage.estimated
    expected = (completion.usage.prompt_tokens * 1.0 + completion.usage.completion_tokens * 2.0) / 1e6
    assert usage.cost_usd == pytest.approx(expected)
    assert usage.config_version == stack.snapshot.version
    done = evs[3]
    assert isinstance(done, RequestCompleted) and done.status == 200 and done.latency_ms > 0


async def test_sdk_stream_with_usage(stack: Stack) -> None:
    async with client(stack) as c:
        stream = await c.chat.completions.create(
            model="small",  # an alias
            messages=[{"role": "user", "content": "Stream something"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        pieces: list[str] = []
        usage = None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            if chunk.usage is not None:
                usage = chunk.usage
    text = "".join(pieces)
    assert text and usage is not None
    assert usage.completion_tokens == len(text.split())
    # The stream's usage is the one accounted.
    recorded = [e for e in stack.events.events if isinstance(e, UsageRecorded)]
    assert len(recorded) == 1
    assert recorded[0].usage.prompt_tokens == usage.prompt_tokens
    assert recorded[0].usage.completion_tokens == usage.completion_tokens
    assert recorded[0].model == "sim-small"
    assert recorded[0].cost_usd == pytest.approx(
        (usage.prompt_tokens * 1.0 + usage.completion_tokens * 2.0) / 1e6
    )
    completed = [e for e in stack.events.events if isinstance(e, RequestCompleted)]
    assert len(completed) == 1 and completed[0].ttft_ms is not None and completed[0].ttft_ms > 0


async def test_stream_without_include_usage_hides_the_injected_usage_chunk(stack: Stack) -> None:
    async with client(stack) as c:
        stream = await c.chat.completions.create(
            model="sim-small", messages=[{"role": "user", "content": "no usage please"}], stream=True
        )
        chunks = [chunk async for chunk in stream]
    assert chunks and all(ch.usage is None for ch in chunks)
    assert all(ch.choices for ch in chunks)  # no empty-choices usage chunk reached the caller
    # ...but the gateway asked for it, so the request was still accounted exactly.
    body = stack.sim.state.recorder.snapshot()["requests"][0].body
    assert body["stream_options"] == {"include_usage": True}
    recorded = [e for e in stack.events.events if isinstance(e, UsageRecorded)]
    assert len(recorded) == 1 and not recorded[0].estimated and recorded[0].usage.completion_tokens > 0


async def test_unknown_fields_reach_the_provider_untouched(stack: Stack) -> None:
    body = {
        "model": "sim-small",
        "messages": [{"role": "user", "content": "hi", "x_custom_part": 1}],
        "some_future_param": {"nested": [1, 2, 3]},
        "temperature": 0.2,
    }
    async with httpx.AsyncClient() as http:
        r = await http.post(
            f"{stack.url}/chat/completions", json=body, headers={"x-nexus-virtual-key": stack.keys.full}
        )
    assert r.status_code == 200
    forwarded = stack.sim.state.recorder.snapshot()["requests"][0].body
    assert forwarded == {**body, "model": "sim-small-v1"}


async def test_cached_and_reasoning_tokens_are_priced(stack: Stack) -> None:
    async with client(stack) as c:
        completion = await c.chat.completions.create(
            model="cached",
            messages=[{"role": "user", "content": "a prompt long enough to have cached tokens in it"}],
        )
    u = completion.usage
    assert u is not None and u.prompt_tokens_details is not None and u.completion_tokens_details is not None
    assert u.prompt_tokens_details.cached_tokens == 8 and u.completion_tokens_details.reasoning_tokens == 5
    (recorded,) = [e for e in stack.events.events if isinstance(e, UsageRecorded)]
    assert recorded.usage.cached_tokens == 8 and recorded.usage.reasoning_tokens == 5
    expected = ((u.prompt_tokens - 8) * 1.0 + 8 * 0.5 + (u.completion_tokens - 5) * 2.0 + 5 * 4.0) / 1e6
    assert recorded.cost_usd == pytest.approx(expected)


async def test_unpriced_model_is_recorded_as_unpriced(stack: Stack) -> None:
    async with client(stack) as c:
        await c.chat.completions.create(model="sim-large", messages=[{"role": "user", "content": "hi"}])
    (recorded,) = [e for e in stack.events.events if isinstance(e, UsageRecorded)]
    assert recorded.priced is False and recorded.cost_usd == 0.0 and recorded.usage.total_tokens > 0


async def test_missing_provider_usage_is_estimated(stack: Stack) -> None:
    async with client(stack) as c:
        completion = await c.chat.completions.create(
            model="mute", messages=[{"role": "user", "content": "hi"}]
        )
    assert completion.usage is None
    (recorded,) = [e for e in stack.events.events if isinstance(e, UsageRecorded)]
    assert recorded.estimated and recorded.usage.prompt_tokens > 0 and recorded.usage.completion_tokens > 0


async def test_models_lists_only_what_the_key_may_call(stack: Stack) -> None:
    async with client(stack, stack.keys.limited) as c:
        limited = [m.id async for m in c.models.list()]
    async with client(stack) as c:
        everything = [m.id async for m in c.models.list()]
    assert limited == ["sim-small"]
    assert "sim-large" in everything and "embedder" in everything and len(everything) == 14
