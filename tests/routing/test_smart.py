"""Smart routing (``model: "auto"``) against real simulated providers: the
router model is a configured target the sim plays (``sim:choose=<name>`` in
the prompt is what it answers), the pick is served, and every router
failure (a 500, a timeout, garbage, a model outside the catalog, a model
the key may not call) serves the default.  The pick and the fact it was
auto-routed are in the events (``routing_rule``: ``<rule>:smart`` or
``<rule>:smart-default:<why>``)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import openai
import pytest
import valkey.asyncio as avalkey

from ingress.gateway import GatewayServer, create_app, start_gateway
from ingress.routing.smart import read_answer, request_text
from nexus.sim import SimServer, SimSettings, start_sim
from nexus.sim.recorder import credential_fingerprint
from projections.traffic import fold
from streams.config_base import ConfigError
from streams.config_validation import parse_config
from streams.events import RequestCompleted, UpstreamResult, UsageRecorded
from streams.keys import hash_key, new_key
from tests.gateway.conftest import EventRecorder
from tests.inprocess import in_process_snapshot
from tests.routing.conftest import ADMIN, SECRET


@dataclass
class SmartStack:
    gateway: GatewayServer
    sim: SimServer
    events: EventRecorder
    key: str
    narrow: str  # cheap and strong only
    strong_only: str  # strong only: not even the default

    @property
    def url(self) -> str:
        return self.gateway.url

    def models_asked(self) -> list[str]:
        return [r.body["model"] for r in self.sim.state.recorder.snapshot()["requests"]]


CATALOG = [
    {"model": "cheap", "description": "small and fast, for chat and short answers"},
    {"model": "strong", "description": "careful reasoning", "strengths": ["math", "code"]},
    {"model": "premium", "description": "the best there is", "price": "very dear"},
    {"model": "broken", "description": "always fails"},
]


def smart(router: str, timeout_ms: float = 2000) -> dict[str, Any]:
    return {
        "type": "smart",
        "router": router,
        "catalog": CATALOG,
        "default": "cheap",
        "timeout_ms": timeout_ms,
    }


def config(
    sim: SimServer,
    key: str,
    narrow: str,
    strong_only: str,
    hooks: dict[str, Any] | None = None,
    cache: dict[str, Any] | None = None,
) -> bytes:
    def provider(name: str, **headers: str) -> dict[str, Any]:
        return {
            "name": name,
            "base_url": sim.url,
            "allow_private_network": True,
            "api_key_env": "SIM_KEY",
            "headers": headers,
        }

    def vk(kid: str, secret: str, allowed: list[str]) -> dict[str, Any]:
        return {
            "id": kid,
            "hash": hash_key(secret, SECRET),
            "org": "acme",
            "project": "web",
            "allowed_models": allowed,
        }

    doc = {
        "orgs": [{"id": "acme"}],
        "projects": [{"id": "web", "org": "acme"}],
        "virtual_keys": [
            vk("k-full", key, ["*"]),
            vk("k-narrow", narrow, ["cheap", "strong"]),
            vk("k-strong", strong_only, ["strong"]),
        ],
        "providers": [
            provider("sim"),
            provider("sim500", **{"x-sim-fail-status": "500"}),
            provider("simslow", **{"x-sim-delay-ms": "3000"}),
            provider("sim503", **{"x-sim-fail-status": "503", "x-sim-retry-after": "0"}),
            {
                "name": "simpool",
                "base_url": sim.url,
                "allow_private_network": True,
                "credentials": [{"id": "only", "env": "SIM_KEY"}],
            },
        ],
        "models": [
            {"name": "router", "provider": "sim", "provider_model": "router-v1"},
            {"name": "router-500", "provider": "sim500", "provider_model": "router-v1"},
            {"name": "router-slow", "provider": "simslow", "provider_model": "router-v1"},
            {"name": "router-pooled", "provider": "simpool", "provider_model": "router-v1"},
            {"name": "cheap", "provider": "sim", "provider_model": "cheap-v1", "price": {"input": 0.1}},
            {"name": "strong", "provider": "sim", "provider_model": "strong-v1", "price": {"input": 3}},
            {"name": "premium", "provider": "sim", "provider_model": "premium-v1"},
            {"name": "broken", "provider": "sim503", "provider_model": "broken-v1"},
        ],
        "hooks": hooks or {},
        "cache": cache or {},
        "routing": {
            "rules": [
                {"name": "auto", "match": ["auto"], "strategy": smart("router")},
                {"name": "auto-500", "match": ["auto-500"], "strategy": smart("router-500")},
                {"name": "auto-slow", "match": ["auto-slow"], "strategy": smart("router-slow", 200)},
                {"name": "auto-pooled", "match": ["auto-pooled"], "strategy": smart("router-pooled")},
                {
                    "name": "auto-policy",
                    "match": ["auto-policy"],
                    "strategy": {"type": "policy", "deny_models": ["premium"], "node": smart("router")},
                },
            ]
        },
    }
    return msgspec.yaml.encode(doc)


async def _stack(
    hooks: dict[str, Any] | None = None,
    cache: dict[str, Any] | None = None,
    valkey: Any = None,
    prefix: str = "nexus:",
) -> SmartStack:
    sim = await start_sim(SimSettings(record_limit=1000))
    key, narrow, strong_only = new_key(), new_key(), new_key()
    snapshot = in_process_snapshot(parse_config(config(sim, key, narrow, strong_only, hooks, cache)), SECRET)
    events = EventRecorder()
    env = {"SIM_KEY": "sk-sim", "NEXUS_ADMIN_TOKEN": ADMIN}
    app = create_app(snapshot, events, env=env, valkey=valkey, valkey_prefix=prefix)
    gateway = await start_gateway(app)
    return SmartStack(gateway, sim, events, key, narrow, strong_only)


@pytest.fixture
async def stack() -> AsyncIterator[SmartStack]:
    s = await _stack()
    yield s
    await s.gateway.close()
    await s.sim.close()


def _keyword(hook_id: str, pattern: str, action: str) -> dict[str, Any]:
    return {
        "id": hook_id,
        "type": "keyword-filter",
        "stage": "request",
        "settings": {"patterns": [pattern], "action": action, "rule": hook_id},
    }


@pytest.fixture
async def guarded() -> AsyncIterator[SmartStack]:
    """Request-stage hooks: "forbidden" blocks, "hunter2" is redacted."""
    hooks = {
        "pipeline": [_keyword("no-forbidden", "forbidden", "block"), _keyword("pw", "hunter2", "redact")]
    }
    s = await _stack(hooks)
    yield s
    await s.gateway.close()
    await s.sim.close()


async def ask(s: SmartStack, model: str, prompt: str, key: str | None = None) -> tuple[str, str, str]:
    """(request id, routed provider model, answer text)."""
    async with openai.AsyncOpenAI(base_url=s.url, api_key=key or s.key, max_retries=0) as c:
        raw = await c.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": prompt}]
        )
    completion = raw.parse()
    return (
        raw.headers["x-nexus-request-id"],
        raw.headers["x-nexus-routed-model"],
        completion.choices[0].message.content or "",
    )


def traffic_row(s: SmartStack, rid: str) -> dict[str, Any]:
    """The traffic_event row the projection folds from this request's events."""
    return fold(s.events.of(rid))[rid]


def recorded(s: SmartStack, rid: str) -> tuple[list[tuple[str, int, str]], RequestCompleted, UsageRecorded]:
    evs = s.events.of(rid)
    attempts = [(e.provider_model, e.status, e.routing_rule) for e in evs if isinstance(e, UpstreamResult)]
    (done,) = [e for e in evs if isinstance(e, RequestCompleted)]
    (usage,) = [e for e in evs if isinstance(e, UsageRecorded)]
    return attempts, done, usage


async def metric(s: SmartStack, rule: str, outcome: str) -> float:
    async with httpx.AsyncClient() as h:
        text = (await h.get(s.url.removesuffix("/v1") + "/metrics")).text
    line = f'nexus_smart_routing_total{{outcome="{outcome}",rule="{rule}"}} '
    found = [ln for ln in text.splitlines() if ln.startswith(line)]
    return float(found[0].split()[-1]) if found else 0.0


async def test_the_router_pick_serves_the_request(stack: SmartStack) -> None:
    before = await metric(stack, "auto", "picked")
    rid, routed, text = await ask(stack, "auto", "Prove that sqrt(2) is irrational. sim:choose=strong")
    assert routed == "strong-v1" and text
    # The router was asked first, through its adapter, for a structured
    # answer over the catalog; then the pick served the caller.
    assert stack.models_asked() == ["router-v1", "strong-v1"]
    router_call = stack.sim.state.recorder.snapshot()["requests"][0].body
    schema = router_call["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["model"]["enum"] == ["cheap", "strong", "premium", "broken"]
    system = router_call["messages"][0]["content"]
    assert "careful reasoning" in system and "Strengths: math, code" in system and "very dear" in system
    assert "sqrt(2)" in router_call["messages"][1]["content"]
    assert router_call["max_tokens"] == 64 and router_call["temperature"] == 0
    attempts, done, usage = recorded(stack, rid)
    assert attempts == [("strong-v1", 200, "auto:smart")]  # the router call is not an attempt
    assert done.routing_rule == "auto:smart" and done.attempts == 1
    assert usage.model == "strong"
    row = traffic_row(stack, rid)
    assert (row["routing_rule"], row["model"], row["provider_model"], row["attempts"]) == (
        "auto:smart",
        "strong",
        "strong-v1",
        1,
    )
    assert row["requested_model"] == "auto"
    assert await metric(stack, "auto", "picked") == before + 1


@pytest.mark.parametrize(
    ("model", "prompt", "why"),
    [
        pytest.param("auto", "hello sim:reply=banana", "unknown_model", id="garbage-word"),
        pytest.param("auto", 'hello sim:reply={"model":', "unparseable", id="broken-json"),
        pytest.param("auto", "hello sim:choose=gpt-9", "unknown_model", id="outside-catalog"),
        pytest.param("auto-500", "hello sim:choose=strong", "router_error", id="router-500"),
        pytest.param("auto-slow", "hello sim:choose=strong", "timeout", id="router-timeout"),
    ],
)
async def test_any_router_failure_serves_the_default(
    stack: SmartStack, model: str, prompt: str, why: str
) -> None:
    before = await metric(stack, model, why)
    started = time.perf_counter()
    rid, routed, text = await ask(stack, model, prompt)
    assert routed == "cheap-v1" and text
    if why == "timeout":
        # bounded by the node's 200 ms, not the router's 3 s
        assert time.perf_counter() - started < 2.0
    assert stack.models_asked()[-1] == "cheap-v1"
    attempts, done, usage = recorded(stack, rid)
    rule = f"{model}:smart-default:{why}"
    assert attempts == [("cheap-v1", 200, rule)]
    assert done.routing_rule == rule and usage.model == "cheap"
    assert traffic_row(stack, rid)["routing_rule"] == rule
    assert await metric(stack, model, why) == before + 1


async def test_a_router_behind_a_credential_pool_presents_a_pooled_credential(stack: SmartStack) -> None:
    _, routed, _ = await ask(stack, "auto-pooled", "hello sim:choose=strong")
    assert routed == "strong-v1"
    router_call = stack.sim.state.recorder.snapshot()["requests"][0]
    assert router_call.body["model"] == "router-v1"
    assert router_call.credential == credential_fingerprint("sk-sim")


async def test_the_router_cannot_widen_what_a_key_may_call(stack: SmartStack) -> None:
    rid, routed, _ = await ask(stack, "auto", "hello sim:choose=premium", key=stack.narrow)
    assert routed == "cheap-v1"
    assert "premium-v1" not in stack.models_asked()
    attempts, done, _ = recorded(stack, rid)
    assert attempts == [("cheap-v1", 200, "auto:smart-default:not_allowed")]
    assert done.routing_rule == "auto:smart-default:not_allowed"


async def test_a_key_that_may_not_call_the_default_is_refused(stack: SmartStack) -> None:
    async with openai.AsyncOpenAI(base_url=stack.url, api_key=stack.strong_only, max_retries=0) as c:
        with pytest.raises(openai.PermissionDeniedError) as info:
            await c.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "hi sim:choose=premium"}]
            )
    assert info.value.status_code == 403
    assert "premium-v1" not in stack.models_asked() and "cheap-v1" not in stack.models_asked()
    # ...while a pick it may call is served
    _, routed, _ = await ask(stack, "auto", "hi sim:choose=strong", key=stack.strong_only)
    assert routed == "strong-v1"


async def test_a_policy_around_the_smart_node_narrows_the_pick(stack: SmartStack) -> None:
    _, routed, _ = await ask(stack, "auto-policy", "hello sim:choose=premium")
    assert routed == "cheap-v1" and "premium-v1" not in stack.models_asked()


async def test_a_pick_that_fails_upstream_falls_back_to_the_default(stack: SmartStack) -> None:
    rid, routed, _ = await ask(stack, "auto", "hello sim:choose=broken")
    assert routed == "cheap-v1"
    attempts, done, _ = recorded(stack, rid)
    assert attempts == [("broken-v1", 503, "auto:smart"), ("cheap-v1", 200, "auto:smart")]
    assert done.attempts == 2
    row = traffic_row(stack, rid)
    assert (row["attempts"], row["upstream_attempt"], row["provider_model"], row["model"]) == (
        2,
        2,
        "cheap-v1",
        "cheap",
    )


async def test_a_streamed_request_is_smart_routed(stack: SmartStack) -> None:
    async with openai.AsyncOpenAI(base_url=stack.url, api_key=stack.key, max_retries=0) as c:
        stream = await c.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "go sim:choose=strong"}], stream=True
        )
        text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
    assert text
    assert stack.models_asked() == ["router-v1", "strong-v1"]


async def test_the_router_never_sees_what_the_request_stage_stops(guarded: SmartStack) -> None:
    """Compliance runs before the router: a blocked prompt reaches no
    provider, the router included; a redacted one reaches it redacted."""
    async with openai.AsyncOpenAI(base_url=guarded.url, api_key=guarded.key, max_retries=0) as c:
        with pytest.raises(openai.PermissionDeniedError):
            await c.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "forbidden sim:choose=strong"}]
            )
    assert guarded.models_asked() == []
    _, routed, _ = await ask(guarded, "auto", "my password is hunter2 sim:choose=strong")
    assert routed == "strong-v1"
    router_call, served = guarded.sim.state.recorder.snapshot()["requests"]
    assert router_call.body["model"] == "router-v1"
    assert "hunter2" not in router_call.body["messages"][1]["content"]
    assert "hunter2" not in served.body["messages"][0]["content"]


@pytest.fixture
async def cached(valkey_url: str, valkey_prefix: str) -> AsyncIterator[SmartStack]:
    client = avalkey.from_url(valkey_url)  # type: ignore[no-untyped-call]
    s = await _stack(cache={"enabled": True, "coalesce": False}, valkey=client, prefix=valkey_prefix)
    yield s
    await s.gateway.close()
    await s.sim.close()
    await client.aclose()


@pytest.mark.integration
async def test_a_cached_answer_asks_no_router(cached: SmartStack) -> None:
    async with openai.AsyncOpenAI(base_url=cached.url, api_key=cached.key, max_retries=0) as c:
        answers = []
        for _ in range(2):
            raw = await c.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": "cache me sim:choose=strong"}]
            )
            answers.append((raw.headers["x-nexus-cache"], raw.parse().choices[0].message.content))
    assert [h for h, _ in answers] == ["MISS", "HIT"] and answers[0][1] == answers[1][1]
    assert cached.models_asked() == ["router-v1", "strong-v1"]  # the hit asked nobody


async def test_explain_asks_the_router_only_when_given_the_turns(stack: SmartStack) -> None:
    auth = {"Authorization": f"Bearer {ADMIN}"}
    explain = stack.url.removesuffix("/v1") + "/internal/routing/explain"
    async with httpx.AsyncClient() as h:
        shown = (await h.post(explain, json={"model": "auto"}, headers=auth)).json()
        assert stack.models_asked() == []  # no turns: the router is not called
        assert shown["target"] == "cheap" and shown["smart"]["asked"] is False
        messages = [{"role": "user", "content": "integrate x^2 sim:choose=premium"}]
        body = {"model": "auto", "messages": messages, "key_id": "k-narrow"}
        shown = (await h.post(explain, json=body, headers=auth)).json()
    assert stack.models_asked() == ["router-v1"]  # asked, nothing served
    assert shown["smart"] == {
        "router": "router",
        "default": "cheap",
        "asked": True,
        "pick": None,
        "outcome": "not_allowed",
        "routing_rule": "auto:smart-default:not_allowed",
    }
    assert shown["target"] == "cheap"
    async with httpx.AsyncClient() as h:
        shown = (await h.post(explain, json={"model": "auto", "messages": messages}, headers=auth)).json()
    assert shown["target"] == "premium" and shown["smart"]["outcome"] == "picked"
    assert [c["model"] for c in shown["candidates"]] == ["premium", "cheap"]


# --- the pure parts ---------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param('{"model": "strong", "reason": "math"}', "strong", id="json"),
        pytest.param('```json\n{"model": "cheap"}\n```', "cheap", id="fenced-json"),
        pytest.param('"premium".', "premium", id="bare-name"),
        pytest.param("I would pick strong", None, id="prose"),
        pytest.param('{"model": 3}', None, id="wrong-type"),
        pytest.param('{"model": ', None, id="broken-json"),
        pytest.param("", None, id="empty"),
    ],
)
def test_read_answer(content: str, expected: str | None) -> None:
    assert read_answer(content) == expected


def test_request_text_reads_every_grammar() -> None:
    chat = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}
    assert request_text(chat) == "system: be brief\nuser: hi"
    claude = {"messages": [{"role": "user", "content": [{"type": "text", "text": "bonjour"}]}]}
    assert request_text(claude) == "user: bonjour"
    assert request_text({"input": "responses api"}) == "responses api"
    gemini = {
        "contents": [
            {"role": "user", "parts": [{"text": "hallo"}]},
            {"role": "model", "parts": [{"text": "hi"}]},
        ]
    }
    assert request_text(gemini) == "user: hallo\nassistant: hi"
    assert len(request_text({"input": "x" * 10_000})) == 4000


@pytest.mark.parametrize(
    ("strategy", "error"),
    [
        pytest.param(
            {"type": "fallback", "targets": [smart("router")]}, "only stands at the root", id="nested"
        ),
        pytest.param({**smart("router"), "router": "nope"}, "router", id="unknown-router"),
        pytest.param({**smart("router"), "default": "nope"}, "default", id="unknown-default"),
        pytest.param({**smart("router"), "catalog": []}, "catalog", id="empty-catalog"),
        pytest.param({**smart("router"), "timeout_ms": 0}, "timeout_ms", id="zero-timeout"),
    ],
)
def test_smart_config_is_checked(strategy: dict[str, Any], error: str) -> None:
    doc = {
        "providers": [{"name": "p", "base_url": "http://127.0.0.1:1/v1", "allow_private_network": True}],
        "models": [{"name": n, "provider": "p"} for n in ("router", "cheap", "strong", "premium", "broken")],
        "routing": {"rules": [{"name": "r", "match": ["auto"], "strategy": strategy}]},
    }
    with pytest.raises(ConfigError, match=error):
        parse_config(msgspec.json.encode(doc))
