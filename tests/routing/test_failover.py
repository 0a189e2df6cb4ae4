"""Failures injected at real simulated providers, through the official
SDKs: fallback serves the request, retries respect their limits, the
breaker opens and recovers, and a stream dropped mid-way is reported in the
caller's format.  Every attempt is an UpstreamResult with its number and
rule; RequestCompleted/RequestFailed carry the attempt count."""

from __future__ import annotations

import asyncio

import anthropic
import httpx
import openai
import pytest
from anthropic.types import MessageParam
from openai.types.chat import ChatCompletionMessageParam

from nexus.sim import SimSettings
from streams.events import RequestCompleted, RequestFailed, UpstreamResult
from tests.routing.conftest import RoutedStack, count_by_model

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello"}]
CLAUDE_HELLO: list[MessageParam] = [{"role": "user", "content": "Say hello"}]


def oai(s: RoutedStack, key: str | None = None) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=s.url, api_key=key or s.key, max_retries=0)


def attempts(s: RoutedStack, request_id: str) -> list[tuple[int, str, int, str, str]]:
    return [
        (e.attempt, e.provider, e.status, e.error_code, e.routing_rule)
        for e in s.events.of(request_id)
        if isinstance(e, UpstreamResult)
    ]


@pytest.mark.parametrize(
    ("model", "failing", "status", "code", "rule"),
    [
        pytest.param("fb-503", "p503", 503, "upstream_unavailable", "on-503", id="5xx"),
        pytest.param("fb-429", "p429", 429, "rate_limited", "on-429", id="429"),
        pytest.param("fb-timeout", "phang", 0, "timeout", "on-timeout", id="timeout"),
        pytest.param("fb-dead", "dead", 0, "upstream_unreachable", "on-dead", id="unreachable"),
    ],
)
async def test_fallback_serves_the_request(
    routed: RoutedStack, model: str, failing: str, status: int, code: str, rule: str
) -> None:
    async with oai(routed) as c:
        raw = await c.chat.completions.with_raw_response.create(model=model, messages=HELLO)
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert raw.headers["x-nexus-routed-provider"] == "back"
    rid = raw.headers["x-nexus-request-id"]
    seen = attempts(routed, rid)
    assert seen[0][:2] == (1, failing) and seen[0][4] == rule
    assert seen[0][2] == status and (seen[0][3] == code or status >= 400)
    assert seen[1] == (2, "back", 200, "", rule)
    done = [e for e in routed.events.of(rid) if isinstance(e, RequestCompleted)]
    assert len(done) == 1 and done[0].attempts == 2 and done[0].routing_rule == rule
    assert done[0].provider == "back"
    assert count_by_model(routed.backup)["backup-v1"] == 1


async def test_fallback_only_on_its_classes(routed: RoutedStack) -> None:
    """A chain that falls back on 5xx only hands a 429 to the caller."""
    async with oai(routed) as c:
        with pytest.raises(openai.RateLimitError):
            await c.chat.completions.create(model="fb-5xx-only", messages=HELLO)
    assert routed.backup.state.recorder.count == 0


async def test_retries_respect_max_attempts(routed: RoutedStack) -> None:
    async with oai(routed) as c:
        with pytest.raises(openai.InternalServerError) as info:
            await c.chat.completions.with_raw_response.create(model="retrying", messages=HELLO)
    assert info.value.status_code == 502  # the provider's 503, as the gateway reports it
    assert count_by_model(routed.primary)["flaky-v1"] == 3
    rid = info.value.response.headers["x-nexus-request-id"]
    assert [a[0] for a in attempts(routed, rid)] == [1, 2, 3]
    failed = [e for e in routed.events.of(rid) if isinstance(e, RequestFailed)]
    assert failed[0].attempts == 3 and failed[0].routing_rule == "retrying"


async def test_total_attempts_cap_stops_before_the_backup(routed: RoutedStack) -> None:
    """3 tries on flaky + 1 on the dead target = the cap of 4: the backup is
    never called and the caller gets the last failure."""
    async with oai(routed) as c:
        with pytest.raises(openai.APIStatusError) as info:
            await c.chat.completions.create(model="capped", messages=HELLO)
    assert info.value.status_code == 502
    assert count_by_model(routed.primary)["flaky-v1"] == 3
    assert routed.backup.state.recorder.count == 0


async def test_a_key_cannot_reach_a_fallback_it_may_not_use(routed: RoutedStack) -> None:
    async with oai(routed, routed.narrow_key) as c:
        with pytest.raises(openai.InternalServerError):
            await c.chat.completions.create(model="fb-503", messages=HELLO)
        with pytest.raises(openai.PermissionDeniedError):
            await c.chat.completions.create(model="fb-429", messages=HELLO)
    assert routed.backup.state.recorder.count == 0


async def test_breaker_opens_and_recovers(routed: RoutedStack) -> None:
    sw = routed.switch.state
    healthy = sw.settings
    sw.settings = SimSettings(record_limit=1000, fail_status=500)
    async with oai(routed) as c:
        for _ in range(3):  # three failures open the breaker; fallback serves each
            r = await c.chat.completions.with_raw_response.create(model="fb-switch", messages=HELLO)
            assert r.headers["x-nexus-routed-provider"] == "back"
        assert sw.recorder.count == 3
        async with httpx.AsyncClient() as h:
            metrics = (await h.get(routed.base + "/metrics")).text
        assert 'nexus_circuit_breaker_state{target="switchy"} 2.0' in metrics

        # Open: the failing target is not called at all.
        for _ in range(3):
            r = await c.chat.completions.with_raw_response.create(model="fb-switch", messages=HELLO)
            assert r.headers["x-nexus-routed-provider"] == "back"
        assert sw.recorder.count == 3
        # A rule whose only target is open still tries it (a last resort)
        # rather than answer an error without trying.
        with pytest.raises(openai.InternalServerError):
            await c.chat.completions.create(model="tiered", messages=HELLO)
        assert sw.recorder.count == 4

        sw.settings = healthy
        await asyncio.sleep(2.05)  # open_s = 2: half-open, one probe goes through
        r = await c.chat.completions.with_raw_response.create(model="fb-switch", messages=HELLO)
        assert r.headers["x-nexus-routed-provider"] == "psw"
        async with httpx.AsyncClient() as h:
            metrics = (await h.get(routed.base + "/metrics")).text
        assert 'nexus_circuit_breaker_state{target="switchy"} 0.0' in metrics
        r = await c.chat.completions.with_raw_response.create(model="fb-switch", messages=HELLO)
        assert r.headers["x-nexus-routed-provider"] == "psw"


async def test_dropped_stream_reported_in_openai_format(routed: RoutedStack) -> None:
    async with oai(routed) as c:
        stream = await c.chat.completions.create(model="fb-drop", messages=HELLO, stream=True)
        got: list[str] = []
        with pytest.raises(openai.APIError) as info:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    got.append(chunk.choices[0].delta.content)
    assert len(got) == 2  # what arrived before the drop reached the caller
    assert "stream" in str(info.value).lower() or "provider" in str(info.value).lower()
    # The caller already had bytes: no fallback to the backup.
    assert routed.backup.state.recorder.count == 0


async def test_dropped_stream_reported_in_anthropic_format(routed: RoutedStack) -> None:
    async with anthropic.AsyncAnthropic(base_url=routed.base, api_key=routed.key, max_retries=0) as c:
        got: list[str] = []
        with pytest.raises(anthropic.APIStatusError) as info:
            async with c.messages.stream(model="fb-drop", max_tokens=50, messages=CLAUDE_HELLO) as stream:
                async for text in stream.text_stream:
                    got.append(text)
    assert len(got) == 2
    assert info.value.body is not None
    assert routed.backup.state.recorder.count == 0


async def test_stream_falls_back_before_the_first_byte(routed: RoutedStack) -> None:
    async with oai(routed) as c:
        stream = await c.chat.completions.create(model="fb-503", messages=HELLO, stream=True)
        text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
    assert text
    assert count_by_model(routed.backup)["backup-v1"] == 1


async def test_traffic_event_row_names_attempts_target_and_rule(routed: RoutedStack) -> None:
    """The events a fallback emitted fold (in any order) into one
    traffic_event row: 2 attempts, the backup as the provider, the rule."""
    from projections.traffic import fold

    async with oai(routed) as c:
        raw = await c.chat.completions.with_raw_response.create(model="fb-503", messages=HELLO)
        with pytest.raises(openai.APIStatusError) as info:
            await c.chat.completions.with_raw_response.create(model="retrying", messages=HELLO)
    rid = raw.headers["x-nexus-request-id"]
    events = routed.events.of(rid)
    for order in (events, list(reversed(events))):
        row = fold(order)[rid]
        assert (row["attempts"], row["upstream_attempt"]) == (2, 2)
        assert (row["provider"], row["routing_rule"], row["outcome"]) == ("back", "on-503", "completed")
    failed_id = info.value.response.headers["x-nexus-request-id"]
    row = fold(routed.events.of(failed_id))[failed_id]
    # flaky failed once for the first request and twice here: 3 failures
    # open its breaker (threshold 3), so the third retry is never sent.
    assert (row["attempts"], row["provider"], row["outcome"]) == (2, "p503", "failed")
    assert count_by_model(routed.primary)["flaky-v1"] == 3


async def test_embeddings_fall_back_to_an_embedding_model(routed: RoutedStack) -> None:
    async with oai(routed) as c:
        raw = await c.embeddings.with_raw_response.create(model="embed-auto", input="hello")
    assert raw.parse().data[0].embedding
    assert raw.headers["x-nexus-routed-provider"] == "back"
    rid = raw.headers["x-nexus-request-id"]
    assert [(a[0], a[1], a[2]) for a in attempts(routed, rid)] == [(1, "p503", 503), (2, "back", 200)]
    # the chat model "backup" in the chain was filtered out by capability
    assert count_by_model(routed.backup) == {"sim-embed": 1}
