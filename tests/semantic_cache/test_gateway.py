"""The semantic cache end to end: the official SDKs against the gateway
with the simulated provider, the packaged model and a real Valkey shared
by two gateway nodes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from ingress.gateway.front import NODE
from streams.events import RequestCompleted, UpstreamResult, UsageRecorded
from tests.semantic_cache.conftest import ADMIN, close_semantic_stack, make_semantic_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

Q1 = "How do I undo the last git commit?"
Q2 = "How can I undo my last commit in git?"  # a paraphrase (0.98)
OTHER = "How do I push my commits to GitHub?"  # another question (0.51)


def msgs(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


def oai(s: Any, key: str | None = None) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=s.url, api_key=key or s.key, max_retries=0)


async def settle(*nodes: Any) -> None:
    for s in nodes:
        state = s.gateway.runner.app[NODE]
        if state.background:
            await asyncio.gather(*state.background)


async def synced(node: Any, entries: int) -> None:
    """Another node learns new vectors by tailing the shared log."""
    sem = node.gateway.runner.app[NODE].current.cache.semantic
    for _ in range(200):
        if len(sem.index) >= entries:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the index log never reached the other node")


def completed(s: Any, rid: str) -> RequestCompleted:
    done = [e for e in s.events.of(rid) if isinstance(e, RequestCompleted)]
    assert len(done) == 1
    return done[0]


@pytest.fixture
async def sem(valkey_url: str, valkey_prefix: str) -> AsyncIterator[Any]:
    s = await make_semantic_stack(valkey_url, valkey_prefix)
    yield s
    await close_semantic_stack(s)


async def test_a_paraphrase_is_served_from_the_cache_with_its_saving(sem: Any) -> None:
    async with oai(sem) as c:
        first = await c.chat.completions.with_raw_response.create(model="gpt-sim", messages=msgs(Q1))
        await settle(sem)
        second = await c.chat.completions.with_raw_response.create(model="gpt-sim", messages=msgs(Q2))
        other = await c.chat.completions.with_raw_response.create(model="gpt-sim", messages=msgs(OTHER))
    assert first.headers["x-nexus-cache"] == "MISS"
    assert second.headers["x-nexus-cache"] == "SEMANTIC_HIT"
    assert float(second.headers["x-nexus-cache-similarity"]) >= 0.93
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert other.headers["x-nexus-cache"] == "MISS"
    assert other.parse().choices[0].message.content != first.parse().choices[0].message.content
    assert sem.upstream_calls == 2

    rid1, rid2 = first.headers["x-nexus-request-id"], second.headers["x-nexus-request-id"]
    cost = next(e for e in sem.events.of(rid1) if isinstance(e, UsageRecorded)).cost_usd
    hit = completed(sem, rid2)
    assert cost > 0
    assert (hit.cache_status, hit.attempts, hit.cache_saving_usd) == ("semantic_hit", 0, cost)
    assert not [e for e in sem.events.of(rid2) if isinstance(e, UsageRecorded | UpstreamResult)]


async def test_a_stream_is_replayed_as_a_stream(sem: Any) -> None:
    async def run(c: openai.AsyncOpenAI, text: str) -> tuple[str, str]:
        raw = await c.chat.completions.with_raw_response.create(
            model="gpt-sim", messages=msgs(text), stream=True, stream_options={"include_usage": True}
        )
        out = ""
        async for chunk in raw.parse():
            if chunk.choices and chunk.choices[0].delta.content:
                out += chunk.choices[0].delta.content
        return raw.headers["x-nexus-cache"], out

    async with oai(sem) as c:
        miss = await run(c, Q1)
        await settle(sem)
        hit = await run(c, Q2)
        unary = await c.chat.completions.with_raw_response.create(model="gpt-sim", messages=msgs(Q2))
    assert miss[0] == "MISS" and hit[0] == "SEMANTIC_HIT"
    assert hit[1] == miss[1] and miss[1]
    assert unary.headers["x-nexus-cache"] == "MISS"  # a stream entry never answers a unary call
    assert sem.upstream_calls == 2


async def test_scopes_models_and_endpoints_are_isolated(sem: Any) -> None:
    async with oai(sem) as c, oai(sem, sem.other_key) as other:
        await c.chat.completions.create(model="gpt-sim", messages=msgs(Q1))
        await settle(sem)
        by_other_key = await other.chat.completions.with_raw_response.create(
            model="gpt-sim", messages=msgs(Q2)
        )
        by_other_model = await c.chat.completions.with_raw_response.create(
            model="slow-sim", messages=msgs(Q2)
        )
        with_a_system_prompt = await c.chat.completions.with_raw_response.create(
            model="gpt-sim", messages=[{"role": "system", "content": "Answer in French."}, *msgs(Q2)]
        )
        hotter = await c.chat.completions.with_raw_response.create(
            model="gpt-sim", messages=msgs(Q2), temperature=1.5
        )
    async with anthropic.AsyncAnthropic(base_url=sem.base, api_key=sem.key, max_retries=0) as a:
        by_other_endpoint = await a.messages.with_raw_response.create(
            model="gpt-sim", max_tokens=64, messages=[{"role": "user", "content": Q2}]
        )
    for r in (by_other_key, by_other_model, with_a_system_prompt, hotter, by_other_endpoint):
        assert r.headers["x-nexus-cache"] == "MISS"
    assert sem.upstream_calls == 6


async def test_cross_model_reuse_only_when_allowed(valkey_url: str, valkey_prefix: str) -> None:
    s = await make_semantic_stack(valkey_url, valkey_prefix, allow_cross_model=True)
    try:
        async with oai(s) as c, oai(s, s.other_key) as other:
            first = await c.chat.completions.create(model="gpt-sim", messages=msgs(Q1))
            await settle(s)
            r = await c.chat.completions.with_raw_response.create(model="slow-sim", messages=msgs(Q2))
            by_other_key = await other.chat.completions.with_raw_response.create(
                model="slow-sim", messages=msgs(Q2)
            )
        assert r.headers["x-nexus-cache"] == "SEMANTIC_HIT"
        assert r.parse().choices[0].message.content == first.choices[0].message.content
        assert by_other_key.headers["x-nexus-cache"] == "MISS"  # the scope still holds
    finally:
        await close_semantic_stack(s)


async def test_entries_are_shared_across_nodes_and_poison_evicts_everywhere(sem: Any) -> None:
    node_b = sem.second
    async with oai(sem) as a, oai(node_b) as b:
        await a.chat.completions.create(model="gpt-sim", messages=msgs(Q1))
        await settle(sem)
        await synced(node_b, 1)
        hit = await b.chat.completions.with_raw_response.create(model="gpt-sim", messages=msgs(Q2))
        assert hit.headers["x-nexus-cache"] == "SEMANTIC_HIT"
        entry = hit.headers["x-nexus-cache-entry"]
        assert sem.upstream_calls == 1

        async with httpx.AsyncClient(base_url=sem.base) as admin:
            url = "/internal/cache/semantic-feedback"
            denied = await admin.post(url, json={"entry": entry}, headers={"Authorization": "Bearer nope"})
            assert denied.status_code == 401
            r = await admin.post(url, json={"entry": entry}, headers={"Authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 200 and r.json() == {"entry": entry, "evicted": True}
        # the exact-cache entry of the same answer went with it
        assert not [k async for k in sem.valkey.scan_iter(f"{sem.prefix}cache:exact:*")]

        # Node B is asked right away, while its index may still hold the
        # vector: it does not serve the evicted answer.
        after_b = await b.chat.completions.with_raw_response.create(model="gpt-sim", messages=msgs(Q2))
        await settle(node_b)
        again = await b.chat.completions.with_raw_response.create(model="gpt-sim", messages=msgs(Q2))
    assert after_b.headers["x-nexus-cache"] == "MISS"
    assert again.headers["x-nexus-cache"] == "HIT"  # the fresh answer is cached again
    assert sem.upstream_calls == 2


async def test_a_model_that_cannot_load_leaves_the_cache_off_and_requests_served(
    valkey_url: str, valkey_prefix: str, tmp_path: Any
) -> None:
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"not an onnx model")
    s = await make_semantic_stack(valkey_url, valkey_prefix, model_path=str(broken))
    try:
        assert s.gateway.runner.app[NODE].current.cache.semantic is None
        async with oai(s) as c:
            r = await c.chat.completions.with_raw_response.create(model="gpt-sim", messages=msgs(Q1))
        assert r.status_code == 200 and r.headers["x-nexus-cache"] == "MISS"
    finally:
        await close_semantic_stack(s)


async def test_a_caller_poisons_only_its_own_scope(sem: Any) -> None:
    async with oai(sem) as c, oai(sem, sem.other_key) as other:
        await c.chat.completions.create(model="gpt-sim", messages=msgs(Q1))
        await settle(sem)
        hit = await c.chat.completions.with_raw_response.create(model="gpt-sim", messages=msgs(Q2))
        entry = hit.headers["x-nexus-cache-entry"]
        poison = {"x-nexus-cache-poison": entry}

        # another key names the entry: nothing happens to it
        await other.chat.completions.create(model="gpt-sim", messages=msgs("Hello"), extra_headers=poison)
        still = await c.chat.completions.with_raw_response.create(model="gpt-sim", messages=msgs(Q2))
        assert still.headers["x-nexus-cache"] == "SEMANTIC_HIT"
        assert sem.upstream_calls == 2

        # its own key does: this very request is answered fresh
        fresh = await c.chat.completions.with_raw_response.create(
            model="gpt-sim", messages=msgs(Q2), extra_headers=poison
        )
    assert fresh.headers["x-nexus-cache"] == "MISS"
    assert sem.upstream_calls == 3
    sem_cache = sem.gateway.runner.app[NODE].current.cache.semantic
    assert await sem_cache.get(entry) is None


async def test_a_fresh_answer_names_its_entry_so_it_can_be_poisoned_before_anyone_hits_it(sem: Any) -> None:
    async with oai(sem) as c:
        fresh = await c.chat.completions.with_raw_response.create(model="gpt-sim", messages=msgs(Q1))
        raw = await c.chat.completions.with_raw_response.create(
            model="gpt-sim", messages=msgs(OTHER), stream=True
        )
        async for _ in raw.parse():
            pass
        await settle(sem)
        entry = fresh.headers["x-nexus-cache-entry"]
        assert raw.headers["x-nexus-cache-entry"] not in ("", entry)  # streams name theirs too
        await c.chat.completions.create(
            model="gpt-sim", messages=msgs("Hello"), extra_headers={"x-nexus-cache-poison": entry}
        )
        after = await c.chat.completions.with_raw_response.create(model="gpt-sim", messages=msgs(Q2))
    assert after.headers["x-nexus-cache"] == "MISS"
    assert sem.upstream_calls == 4


async def test_semantic_cache_alone_without_the_exact_cache(valkey_url: str, valkey_prefix: str) -> None:
    s = await make_semantic_stack(valkey_url, valkey_prefix, cache={"enabled": False, "coalesce": False})
    try:
        async with oai(s) as c:
            await c.chat.completions.create(model="gpt-sim", messages=msgs(Q1))
            await settle(s)
            same = await c.chat.completions.with_raw_response.create(model="gpt-sim", messages=msgs(Q1))
            para = await c.chat.completions.with_raw_response.create(model="gpt-sim", messages=msgs(Q2))
        assert same.headers["x-nexus-cache"] == para.headers["x-nexus-cache"] == "SEMANTIC_HIT"
        assert s.upstream_calls == 1
        assert not [k async for k in s.valkey.scan_iter(f"{s.prefix}cache:exact:*")]
    finally:
        await close_semantic_stack(s)


class Broken:
    version = "ignored"  # the namespace was fixed when the cache started

    def embed(self, text: str) -> Any:
        raise RuntimeError("the ONNX session is gone")

    def residue(self, text: str) -> str:
        return ""


async def test_a_failing_embedder_opens_the_breaker_and_requests_are_still_served(sem: Any) -> None:
    from ingress.cache.semantic.cache import BREAKER_TARGET
    from ingress.routing.breaker import BreakerState

    cache = sem.gateway.runner.app[NODE].current.cache.semantic
    cache.embedder = Broken()
    async with oai(sem) as c:
        for i in range(7):
            r = await c.chat.completions.with_raw_response.create(
                model="gpt-sim", messages=msgs(f"Question number {i}")
            )
            assert r.status_code == 200 and r.headers["x-nexus-cache"] == "MISS"
            assert r.parse().choices[0].message.content
    assert sem.upstream_calls == 7
    assert cache.breakers.state(BREAKER_TARGET) is BreakerState.OPEN  # 5 failures (the default)
    async with httpx.AsyncClient(base_url=sem.base) as plain:
        text = (await plain.get("/metrics")).text
    assert 'nexus_semantic_cache_lookups_total{outcome="breaker_open"}' in text
    assert 'nexus_circuit_breaker_state{target="semantic-cache-embedder"} 2.0' in text
