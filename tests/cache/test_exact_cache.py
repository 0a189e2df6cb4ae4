"""The exact cache through the official SDKs, on a real Valkey: a repeated
request is answered from the cache (unary and streamed, in the caller's
format), the provider is not called again, and the hit is an event with
the saving in USD and no charge."""

from __future__ import annotations

import anthropic
import openai
import pytest
from anthropic.types import MessageParam
from openai.types.chat import ChatCompletionMessageParam

from streams.events import RequestCompleted, UpstreamResult, UsageRecorded
from tests.cache.conftest import CacheStack, close_stack, make_stack


def msgs(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


def oai(s: CacheStack, key: str | None = None) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=s.url, api_key=key or s.key, max_retries=0)


def completed(s: CacheStack, rid: str) -> RequestCompleted:
    done = [e for e in s.events.of(rid) if isinstance(e, RequestCompleted)]
    assert len(done) == 1
    return done[0]


async def settle(s: CacheStack) -> None:
    """Cache writes are in the background: wait for them."""
    import asyncio

    from ingress.gateway.front import NODE

    state = s.gateway.runner.app[NODE]
    if state.background:
        await asyncio.gather(*state.background)


async def test_unary_hit_replays_the_answer_and_saves_the_cost(cached: CacheStack) -> None:
    async with oai(cached) as c:
        first = await c.chat.completions.with_raw_response.create(
            model="gpt-sim", messages=msgs("Tell me a fact")
        )
        await settle(cached)
        second = await c.chat.completions.with_raw_response.create(
            model="gpt-sim", messages=msgs("Tell me a fact")
        )
    assert first.headers["x-nexus-cache"] == "MISS" and second.headers["x-nexus-cache"] == "HIT"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert second.parse().usage == first.parse().usage
    assert cached.upstream_calls == 1

    rid1, rid2 = first.headers["x-nexus-request-id"], second.headers["x-nexus-request-id"]
    cost = next(e for e in cached.events.of(rid1) if isinstance(e, UsageRecorded)).cost_usd
    assert cost > 0
    hit = completed(cached, rid2)
    assert (hit.cache_status, hit.attempts, hit.cache_saving_usd) == ("hit", 0, cost)
    assert hit.provider == "sim" and hit.provider_model == "sim-v1"
    assert completed(cached, rid1).cache_status == "miss"
    # nothing charged, nothing sent upstream for the hit
    assert not [e for e in cached.events.of(rid2) if isinstance(e, UsageRecorded | UpstreamResult)]
    keys = [k async for k in cached.valkey.scan_iter(match=cached.prefix + "cache:exact:*")]
    assert len(keys) == 1
    assert 0 < await cached.valkey.ttl(keys[0]) <= 120


async def test_stream_hit_is_replayed_as_a_stream(cached: CacheStack) -> None:
    async def run(c: openai.AsyncOpenAI) -> tuple[str, str, int]:
        raw = await c.chat.completions.with_raw_response.create(
            model="gpt-sim",
            messages=msgs("Stream me a story"),
            stream=True,
            stream_options={"include_usage": True},
        )
        text, total = "", 0
        async for chunk in raw.parse():
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
            if chunk.usage:
                total = chunk.usage.total_tokens
        return raw.headers["x-nexus-cache"], text, total

    async with oai(cached) as c:
        miss = await run(c)
        await settle(cached)
        hit = await run(c)
    assert miss[0] == "MISS" and hit[0] == "HIT"
    assert hit[1:] == miss[1:] and miss[1] and miss[2] > 0
    assert cached.upstream_calls == 1


async def test_anthropic_sdk_hits_in_its_own_format(cached: CacheStack) -> None:
    claude: list[MessageParam] = [{"role": "user", "content": "Hello Claude"}]
    async with anthropic.AsyncAnthropic(base_url=cached.base, api_key=cached.key, max_retries=0) as c:
        first = await c.messages.create(model="gpt-sim", max_tokens=64, messages=claude)
        await settle(cached)
        second = await c.messages.create(model="gpt-sim", max_tokens=64, messages=claude)
        async with c.messages.stream(model="gpt-sim", max_tokens=64, messages=claude) as s:
            streamed = await s.get_final_message()
        await settle(cached)
        async with c.messages.stream(model="gpt-sim", max_tokens=64, messages=claude) as s:
            replayed = await s.get_final_message()
    assert second.content == first.content and second.type == "message"
    assert replayed.content == streamed.content
    assert cached.upstream_calls == 2  # one unary, one stream: separate entries


async def test_no_cache_header_and_time_sensitive_prompts_go_upstream(cached: CacheStack) -> None:
    async with oai(cached) as c:
        for _ in range(2):
            r = await c.chat.completions.with_raw_response.create(
                model="gpt-sim", messages=msgs("A fact"), extra_headers={"x-nexus-aigw-no-cache": "1"}
            )
            assert r.headers["x-nexus-cache"] == "BYPASS"
            await settle(cached)
        for _ in range(2):
            r = await c.chat.completions.with_raw_response.create(
                model="gpt-sim", messages=msgs("What is the latest news today?")
            )
            assert r.headers["x-nexus-cache"] == "SKIP"
            await settle(cached)
    assert cached.upstream_calls == 4
    rid = r.headers["x-nexus-request-id"]
    assert completed(cached, rid).cache_status == "skipped"


async def test_scope_isolation_between_keys(cached: CacheStack) -> None:
    async with oai(cached) as c, oai(cached, cached.other_key) as other:
        await c.chat.completions.create(model="gpt-sim", messages=msgs("Shared question"))
        await settle(cached)
        r = await other.chat.completions.with_raw_response.create(
            model="gpt-sim", messages=msgs("Shared question")
        )
    assert r.headers["x-nexus-cache"] == "MISS"
    assert cached.upstream_calls == 2


async def test_different_parameters_miss(cached: CacheStack) -> None:
    async with oai(cached) as c:
        await c.chat.completions.create(model="gpt-sim", messages=msgs("Q"), temperature=0.1)
        await settle(cached)
        r = await c.chat.completions.with_raw_response.create(
            model="gpt-sim", messages=msgs("Q"), temperature=0.9
        )
    assert r.headers["x-nexus-cache"] == "MISS"
    assert cached.upstream_calls == 2


async def test_entries_over_the_size_cap_are_not_stored(valkey_url: str, valkey_prefix: str) -> None:
    import httpx

    s = await make_stack(valkey_url, valkey_prefix, max_entry_bytes=1024)
    body = {"model": "gpt-sim", "stream": True, "messages": msgs("Tell me a long story")}
    try:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {s.key}"}) as h:
            for _ in range(2):
                r = await h.post(s.url + "/chat/completions", json=body)
                assert r.status_code == 200 and len(r.content) > 1024  # an SSE stream over the cap
                await settle(s)
        assert r.headers["x-nexus-cache"] == "MISS"
        assert s.upstream_calls == 2
    finally:
        await close_stack(s)


async def test_valkey_down_fails_open(valkey_url: str, valkey_prefix: str) -> None:
    import valkey.asyncio as avalkey

    dead = avalkey.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)  # type: ignore[no-untyped-call]
    s = await make_stack(valkey_url, valkey_prefix, valkey_client=dead)
    try:
        async with oai(s) as c:
            for _ in range(2):
                r = await c.chat.completions.with_raw_response.create(
                    model="gpt-sim", messages=msgs("still there?")
                )
                assert r.parse().choices[0].message.content
                await settle(s)
        assert s.upstream_calls == 2
    finally:
        await close_stack(s)


@pytest.mark.parametrize("bad", [{"ttl_s": 5}, {"max_entry_bytes": 10}, {"skip_patterns": ["(unclosed"]}])
def test_bad_cache_config_is_a_clear_error(bad: dict[str, object]) -> None:
    from streams.config_base import ConfigError
    from streams.config_validation import parse_config

    with pytest.raises(ConfigError, match="cache"):
        parse_config(
            b"cache:\n" + "".join(f"  {k}: {v!r}\n" for k, v in bad.items()).encode().replace(b"'", b'"')
        )
