"""A new configuration applied while the gateway serves (``ingress.gateway.
runtime``): it takes effect for the next request; a request in progress
finishes on the one it began with; one that cannot be built changes
nothing; what did not change (sessions, breakers, the engine) carries over."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import openai
import pytest

from ingress.gateway import apply
from ingress.gateway.front import NODE
from nexus.sim import SimSettings
from streams.config import NexusConfig
from streams.config_base import ConfigError
from streams.config_validation import validate_config
from tests.gateway.conftest import SECRET, Stack, make_stack
from tests.inprocess import in_process_snapshot


@pytest.fixture
async def live() -> AsyncIterator[Stack]:
    s = await make_stack()
    yield s
    await s.gateway.close()
    await s.sim.close()


def _config(s: Stack) -> dict[str, Any]:
    """The stack's config as plain, editable JSON data."""
    return msgspec.json.decode(msgspec.json.encode(s.snapshot.config))  # type: ignore[no-any-return]


async def _apply(s: Stack, change: dict[str, Any]) -> None:
    config = msgspec.json.decode(msgspec.json.encode(change), type=NexusConfig)
    validate_config(config)
    await apply(s.gateway.runner.app, in_process_snapshot(config, SECRET, lag_shedding=False))


def _client(s: Stack, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=s.url, api_key=key, max_retries=0)


HI = [{"role": "user", "content": "hi"}]


async def test_a_revoked_key_is_refused_at_once_while_its_stream_in_flight_finishes(live: Stack) -> None:
    live.sim.state.settings = SimSettings(tokens_per_s=40, api_key="sk-sim-test")
    client = _client(live, live.keys.full)
    stream = await client.chat.completions.create(model="sim-small", messages=HI, stream=True)
    first = await stream.__anext__()  # the stream is under way on the first snapshot
    cfg = _config(live)
    for k in cfg["virtual_keys"]:
        if k["id"] == "k-full":
            k["status"] = "revoked"
    await _apply(live, cfg)
    with pytest.raises(openai.AuthenticationError) as refused:
        await client.chat.completions.create(model="sim-small", messages=HI)
    assert refused.value.code == "key_revoked"
    rest = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in [first, *rest] if c.choices)
    assert (text and rest[-1].choices == []) or rest[-1].choices[0].finish_reason == "stop"
    await client.close()


async def test_a_key_and_a_model_added_work_on_the_next_request(live: Stack) -> None:
    from streams.keys import hash_key, new_key

    cfg = _config(live)
    newcomer = new_key()
    cfg["virtual_keys"].append(
        {"id": "k-new", "hash": hash_key(newcomer, SECRET), "org": "acme", "project": "web"}
    )
    cfg["models"].append({"name": "fresh", "provider": "sim", "provider_model": "sim-fresh"})
    client = _client(live, newcomer)
    with pytest.raises(openai.AuthenticationError):
        await client.chat.completions.create(model="fresh", messages=HI)
    await _apply(live, cfg)
    answer = await client.chat.completions.create(model="fresh", messages=HI)
    assert answer.model == "fresh" and answer.choices[0].message.content
    await client.close()


async def test_a_snapshot_that_cannot_be_built_changes_nothing(live: Stack) -> None:
    cfg = _config(live)
    # A rate-limit hook keeps its counters in Valkey, which this gateway has
    # none of: the engine cannot be built.
    cfg["hooks"] = {
        "pipeline": [
            {
                "id": "rl",
                "type": "rate-limiter",
                "stage": "request",
                "settings": {"max_requests": 1, "window_seconds": 60},
            },
        ]
    }
    node = live.gateway.runner.app[NODE]
    before = node.current
    with pytest.raises(ConfigError, match="Valkey"):
        await _apply(live, cfg)
    assert node.current is before and before.compliance is None
    client = _client(live, live.keys.full)
    for _ in range(3):  # no rate limit took effect
        assert (await client.chat.completions.create(model="sim-small", messages=HI)).choices
    await client.close()


async def test_a_hook_added_takes_effect_and_unchanged_parts_carry_over(live: Stack) -> None:
    node = live.gateway.runner.app[NODE]
    before = node.current
    kept = before.upstreams.get("sim").http
    client = _client(live, live.keys.full)
    # What the node learnt of a target (a failure its breaker counts).
    before.routing.breakers.failure("flaky")
    failures = len(before.routing.breakers._get("flaky").failures)
    assert failures == 1
    cfg = _config(live)
    cfg["hooks"] = {
        "pipeline": [
            {
                "id": "kw",
                "type": "keyword-filter",
                "stage": "request",
                "settings": {"patterns": ["forbidden\\s+word"], "action": "block"},
            }
        ]
    }
    await _apply(live, cfg)
    after = node.current
    assert after is not before and after.compliance is not None
    with pytest.raises(openai.PermissionDeniedError):
        await client.chat.completions.create(
            model="sim-small", messages=[{"role": "user", "content": "the forbidden word"}]
        )
    assert (await client.chat.completions.create(model="sim-small", messages=HI)).choices
    # the provider did not change: same client (its connections), same breakers
    assert after.upstreams.get("sim").http is kept and not kept.closed
    assert len(after.routing.breakers._get("flaky").failures) == failures
    # and an unrelated change keeps the engine that was built
    cfg["virtual_keys"] = [k for k in cfg["virtual_keys"] if k["id"] != "k-expired"]
    await _apply(live, cfg)
    assert node.current.compliance is after.compliance
    await client.close()


async def test_a_removed_provider_closes_its_session_after_its_last_request(live: Stack) -> None:
    node = live.gateway.runner.app[NODE]
    old = node.current
    live.sim.state.settings = SimSettings(latency_ms=600, api_key="sk-sim-test")
    cfg = _config(live)
    cfg["providers"] = [p for p in cfg["providers"] if p["name"] != "sim-drop"]
    cfg["models"] = [m for m in cfg["models"] if m["provider"] != "sim-drop"]
    client = _client(live, live.keys.full)
    slow = asyncio.ensure_future(client.chat.completions.create(model="dropper", messages=HI))
    while old.refs == 0:
        await asyncio.sleep(0.01)
    await _apply(live, cfg)
    dropped = old.upstreams.get("sim-drop").http
    assert not dropped.closed  # the old runtime still serves its request
    await asyncio.gather(slow, return_exceptions=True)
    for _ in range(100):
        if dropped.closed:
            break
        await asyncio.sleep(0.02)
    assert dropped.closed
    assert not node.current.upstreams.get("sim").http.closed
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="dropper", messages=HI)
    await client.close()
