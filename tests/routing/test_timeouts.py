"""Connect, time-to-first-token and total timeouts are separate: a stream
whose first token is late is abandoned before the caller heard anything
and failed over as a ``timeout``; a stream that started but is slow is not
cut by the TTFT bound, only by the total.  Delays are the sim's
(``x-sim-ttft-ms``, ``x-sim-tokens-per-s``), through the OpenAI SDK (the
same-format relay) and the Anthropic SDK (the translated stream)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import msgspec
import openai
import pytest

from ingress.gateway import GatewayServer, create_app, start_gateway
from nexus.sim import SimServer, SimSettings, start_sim
from projections.traffic import fold
from streams.config_base import ConfigError
from streams.config_validation import parse_config
from streams.events import RequestCompleted, UpstreamResult
from streams.keys import hash_key, new_key
from tests.gateway.conftest import EventRecorder
from tests.inprocess import in_process_snapshot
from tests.routing.conftest import SECRET


@dataclass
class TimeoutStack:
    gateway: GatewayServer
    sim: SimServer
    events: EventRecorder
    key: str

    @property
    def url(self) -> str:
        return self.gateway.url

    def attempts(self, rid: str) -> list[tuple[int, str, int, str]]:
        return [
            (e.attempt, e.provider, e.status, e.error_code)
            for e in self.events.of(rid)
            if isinstance(e, UpstreamResult)
        ]


def config(sim: SimServer, key: str) -> bytes:
    def provider(name: str, headers: dict[str, str], **timeouts: float) -> dict[str, Any]:
        return {
            "name": name,
            "base_url": sim.url,
            "allow_private_network": True,
            "api_key_env": "SIM_KEY",
            "headers": headers,
            **timeouts,
        }

    doc = {
        "orgs": [{"id": "acme"}],
        "projects": [{"id": "web", "org": "acme"}],
        "virtual_keys": [{"id": "k", "hash": hash_key(key, SECRET), "org": "acme", "project": "web"}],
        "providers": [
            # headers at once, then 3 s of silence before the first token
            provider("late", {"x-sim-ttft-ms": "3000"}, ttft_timeout_s=0.3),
            # the first token at once, then one every ~67 ms (0.5-1.5 s in all)
            provider("slow", {"x-sim-tokens-per-s": "15"}, ttft_timeout_s=0.3),
            # 0.7-2.3 s of tokens against a 0.4 s total
            provider("long", {"x-sim-tokens-per-s": "10"}, ttft_timeout_s=0.3, total_timeout_s=0.4),
            provider("backup", {}),
        ],
        "models": [
            {"name": "late", "provider": "late", "provider_model": "late-v1"},
            {"name": "slow", "provider": "slow", "provider_model": "slow-v1"},
            {"name": "long", "provider": "long", "provider_model": "long-v1"},
            {"name": "backup", "provider": "backup", "provider_model": "backup-v1"},
        ],
        "routing": {
            "rules": [
                {
                    "name": "late-then-backup",
                    "match": ["late-then-backup"],
                    "strategy": {
                        "type": "fallback",
                        # only timeouts fall back: the TTFT bound must be one
                        "on_failure": ["timeout"],
                        "targets": [
                            {"type": "single", "model": "late"},
                            {"type": "single", "model": "backup"},
                        ],
                    },
                },
            ]
        },
    }
    return msgspec.yaml.encode(doc)


@pytest.fixture
async def stack() -> AsyncIterator[TimeoutStack]:
    sim = await start_sim(SimSettings(record_limit=1000))
    key = new_key()
    events = EventRecorder()
    snapshot = in_process_snapshot(parse_config(config(sim, key)), SECRET)
    gateway = await start_gateway(create_app(snapshot, events, env={"SIM_KEY": "sk-sim"}))
    yield TimeoutStack(gateway, sim, events, key)
    await gateway.close()
    await sim.close()


async def stream_openai(s: TimeoutStack, model: str) -> tuple[str, str, str]:
    """(request id, routed model, text)."""
    async with openai.AsyncOpenAI(base_url=s.url, api_key=s.key, max_retries=0) as c:
        raw = await c.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "tell me a story"}], stream=True
        )
        text = "".join([ch.choices[0].delta.content or "" async for ch in raw.parse() if ch.choices])
    return raw.headers["x-nexus-request-id"], raw.headers["x-nexus-routed-model"], text


async def stream_anthropic(s: TimeoutStack, model: str) -> tuple[str, str, str]:
    async with anthropic.AsyncAnthropic(
        base_url=s.url.removesuffix("/v1"), api_key=s.key, max_retries=0
    ) as c:
        raw = await c.messages.with_raw_response.create(
            model=model,
            max_tokens=100,
            messages=[{"role": "user", "content": "tell me a story"}],
            stream=True,
        )
        parts = [
            ev.delta.text
            async for ev in await raw.parse()
            if ev.type == "content_block_delta" and ev.delta.type == "text_delta"
        ]
    return raw.headers["x-nexus-request-id"], raw.headers["x-nexus-routed-model"], "".join(parts)


SDKS = [
    pytest.param(stream_openai, id="openai-relay"),
    pytest.param(stream_anthropic, id="anthropic-translated"),
]


@pytest.mark.parametrize("stream", SDKS)
async def test_a_late_first_token_is_failed_over_as_a_timeout(stack: TimeoutStack, stream: Any) -> None:
    started = time.perf_counter()
    rid, routed, text = await stream(stack, "late-then-backup")
    assert time.perf_counter() - started < 2.0  # not the 3 s the late provider takes
    assert routed == "backup-v1" and text
    assert stack.attempts(rid) == [(1, "late", 200, "ttft_timeout"), (2, "backup", 200, "")]
    (done,) = [e for e in stack.events.of(rid) if isinstance(e, RequestCompleted)]
    assert done.attempts == 2 and done.provider == "backup"
    row = fold(stack.events.of(rid))[rid]
    assert (row["attempts"], row["upstream_attempt"], row["provider"], row["routing_rule"]) == (
        2,
        2,
        "backup",
        "late-then-backup",
    )


@pytest.mark.parametrize("stream", SDKS)
async def test_a_slow_stream_that_started_is_not_cut_by_the_ttft_bound(
    stack: TimeoutStack, stream: Any
) -> None:
    started = time.perf_counter()
    rid, routed, text = await stream(stack, "slow")
    assert time.perf_counter() - started > 0.4  # it ran well past the 0.3 s bound
    assert routed == "slow-v1" and len(text.split()) >= 8
    assert stack.attempts(rid) == [(1, "slow", 200, "")]


async def test_with_no_fallback_a_late_first_token_is_a_504_in_the_callers_format(
    stack: TimeoutStack,
) -> None:
    async with openai.AsyncOpenAI(base_url=stack.url, api_key=stack.key, max_retries=0) as c:
        with pytest.raises(openai.APIStatusError) as info:
            await c.chat.completions.create(
                model="late", messages=[{"role": "user", "content": "hi"}], stream=True
            )
    assert info.value.status_code == 504
    assert info.value.response.headers["content-type"].startswith("application/json")
    assert isinstance(info.value.body, dict) and info.value.body.get("code") == "timeout"
    async with anthropic.AsyncAnthropic(
        base_url=stack.url.removesuffix("/v1"), api_key=stack.key, max_retries=0
    ) as c:
        with pytest.raises(anthropic.APIStatusError) as claude:
            await c.messages.create(
                model="late", max_tokens=50, messages=[{"role": "user", "content": "hi"}], stream=True
            )
    assert claude.value.status_code == 504
    assert isinstance(claude.value.body, dict) and claude.value.body["type"] == "error"


async def test_the_total_bound_still_cuts_a_started_stream(stack: TimeoutStack) -> None:
    """Past its first token a stream is bounded by the total: cut mid-way,
    with an error frame (the caller already has part of the answer)."""
    body = {"model": "long", "stream": True, "messages": [{"role": "user", "content": "tell me a story"}]}
    async with httpx.AsyncClient(timeout=10) as h:
        resp = await h.post(
            stack.url + "/chat/completions", json=body, headers={"Authorization": f"Bearer {stack.key}"}
        )
    assert resp.status_code == 200
    frames = [ln.removeprefix("data: ") for ln in resp.text.splitlines() if ln.startswith("data: ")]
    assert any('"content"' in f for f in frames[:-1])  # some tokens arrived
    assert msgspec.json.decode(frames[-1])["error"]["code"] == "timeout"


def test_timeouts_must_be_positive() -> None:
    for field in ("ttft_timeout_s", "total_timeout_s"):
        doc = {"providers": [{"name": "p", "base_url": "https://api.example.com/v1", field: 0}]}
        with pytest.raises(ConfigError, match="timeouts must be positive"):
            parse_config(msgspec.json.encode(doc))
