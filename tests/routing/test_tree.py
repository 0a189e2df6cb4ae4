"""The routing tree as a pure function: each strategy, the key's allowed
models as a hard filter, health ordering, and config errors."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import pytest

from ingress.routing import RouteContext, decide
from streams.config import NexusConfig
from streams.config_base import ConfigError
from tests.routing.helpers import routing_config


def run(
    cfg: NexusConfig,
    ctx: RouteContext | None = None,
    health: Mapping[str, str] | None = None,
    allowed: set[str] | None = None,
    seed: int = 1,
) -> Any:
    models = {m.name: m for m in cfg.models}
    return decide(
        cfg.routing.rules[0],
        ctx or RouteContext(model="auto"),
        health or {},
        models=models,
        allowed=(lambda n: True) if allowed is None else (lambda n: n in allowed),
        rng=random.Random(seed),
    )


def single(m: str) -> dict[str, Any]:
    return {"type": "single", "model": m}


def names(decision: Any) -> list[str]:
    return [c.model for c in decision.candidates]


def test_single() -> None:
    d = run(routing_config(single("c")))
    assert names(d) == ["c"] and d.candidates[0].provider == "p2"
    assert d.fallback_on == frozenset()


def test_fallback_chain_in_order_and_classes() -> None:
    cfg = routing_config(
        {
            "type": "fallback",
            "on_failure": ["5xx", "timeout"],
            "targets": [single("a"), single("b"), single("c")],
        }
    )
    d = run(cfg)
    assert names(d) == ["a", "b", "c"]
    assert d.fallback_on == {"5xx", "timeout"}


def test_health_reorders_but_never_drops() -> None:
    cfg = routing_config({"type": "fallback", "targets": [single("a"), single("b"), single("c")]})
    d = run(cfg, health={"a": "unavailable", "b": "degraded"})
    assert names(d) == ["c", "b", "a"]


def test_fallback_cannot_bypass_allowed_models() -> None:
    cfg = routing_config({"type": "fallback", "targets": [single("a"), single("c")]})
    d = run(cfg, allowed={"a"}, health={"a": "unavailable"})
    assert names(d) == ["a"]
    assert d.refused == ("c",)
    d = run(cfg, allowed={"d"})
    assert names(d) == []


def test_policy_narrows() -> None:
    inner = {"type": "fallback", "targets": [single("a"), single("b"), single("c"), single("d")]}
    d = run(
        routing_config({"type": "policy", "deny_models": ["b"], "allow_providers": ["p1"], "node": inner})
    )
    assert names(d) == ["a"]
    assert any("policy removed" in s for s in d.steps)


def test_conditional_operators() -> None:
    cfg = routing_config(
        {
            "type": "conditional",
            "conditions": [
                {
                    "when": {"headers.x-tier": {"$in": ["gold", "platinum"]}, "stream": True},
                    "then": single("a"),
                },
                {"when": {"$or": [{"key.org": "beta"}, {"metadata.n": {"$gte": 5}}]}, "then": single("b")},
                {
                    "when": {"endpoint": {"$regex": "^/v1/mess"}, "key.user": {"$ne": "bob"}},
                    "then": single("c"),
                },
                {"when": {"$not": {"key.project": {"$exists": True}}}, "then": single("d")},
            ],
            "default": single("b"),
        }
    )
    gold = RouteContext(model="auto", stream=True, headers={"x-tier": "gold"}, key={"project": "web"})
    assert names(run(cfg, gold)) == ["a"]
    silver = RouteContext(model="auto", stream=True, headers={"x-tier": "silver"}, key={"project": "web"})
    assert names(run(cfg, silver)) == ["b"]  # default
    msgs = RouteContext(model="auto", endpoint="/v1/messages", key={"user": "alice", "project": "web"})
    assert names(run(cfg, msgs)) == ["c"]
    bob = RouteContext(model="auto", endpoint="/v1/messages", key={"user": "bob", "project": "web"})
    assert names(run(cfg, bob)) == ["b"]
    assert names(run(cfg, RouteContext(model="auto"))) == ["d"]
    many = RouteContext(model="auto", metadata={"n": 7}, key={"project": "web"})
    assert names(run(cfg, many)) == ["b"]


def test_conditional_without_default_yields_nothing() -> None:
    cfg = routing_config(
        {"type": "conditional", "conditions": [{"when": {"model": "x"}, "then": single("a")}]}
    )
    assert names(run(cfg)) == []


def test_loadbalance_skips_an_arm_that_is_down() -> None:
    cfg = routing_config(
        {
            "type": "loadbalance",
            "targets": [{"weight": 99, "node": single("a")}, {"weight": 1, "node": single("b")}],
        }
    )
    for seed in range(50):
        assert names(run(cfg, health={"a": "unavailable"}, seed=seed)) == ["b"]


def test_sticky_header_keeps_a_session_on_one_target() -> None:
    cfg = routing_config(
        {
            "type": "loadbalance",
            "sticky_on": "header:x-session",
            "targets": [{"weight": 1, "node": single("a")}, {"weight": 1, "node": single("b")}],
        }
    )
    seen: set[str] = set()
    for session in ("s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8"):
        ctx = RouteContext(model="auto", headers={"x-session": session})
        picks = {names(run(cfg, ctx, seed=seed))[0] for seed in range(20)}
        assert len(picks) == 1
        seen |= picks
    assert seen == {"a", "b"}


def test_nested_lb_inside_fallback_and_explanation() -> None:
    cfg = routing_config(
        {
            "type": "fallback",
            "targets": [
                {
                    "type": "loadbalance",
                    "targets": [{"weight": 1, "node": single("a")}, {"weight": 1, "node": single("b")}],
                },
                single("c"),
            ],
        }
    )
    d = run(cfg)
    assert names(d)[1] == "c" and names(d)[0] in ("a", "b")
    out = d.explain()
    assert out["target"] == names(d)[0] and out["rule"] == "r"
    assert any("loadbalance chose" in s for s in out["steps"])


def test_ab_split_names_the_arm() -> None:
    cfg = routing_config(
        {
            "type": "ab_split",
            "sticky_on": "none",
            "arms": [{"name": "ctl", "weight": 1, "model": "a"}, {"name": "exp", "weight": 1, "model": "c"}],
        }
    )
    d = run(cfg)
    assert d.arm == {"a": "ctl", "c": "exp"}[names(d)[0]]


@pytest.mark.parametrize(
    ("strategy", "message"),
    [
        pytest.param(single("zzz"), "unknown model 'zzz'", id="unknown-model"),
        pytest.param({"type": "fallback", "targets": []}, "at least one target", id="empty-fallback"),
        pytest.param(
            {"type": "loadbalance", "targets": [{"weight": 0, "node": single("a")}]},
            "must be positive",
            id="zero-weight",
        ),
        pytest.param(
            {
                "type": "conditional",
                "conditions": [{"when": {"model": {"$where": "x"}}, "then": single("a")}],
            },
            "unknown operator '$where'",
            id="bad-operator",
        ),
        pytest.param(
            {"type": "conditional", "conditions": [{"when": {"body.x": 1}, "then": single("a")}]},
            "must start with one of",
            id="bad-field",
        ),
        pytest.param(
            {
                "type": "conditional",
                "conditions": [{"when": {"model": {"$regex": "(a"}}, "then": single("a")}],
            },
            "$regex",
            id="bad-regex",
        ),
        pytest.param(
            {
                "type": "conditional",
                "conditions": [{"when": {"model": {"$regex": "a" * 300}}, "then": single("a")}],
            },
            "at most 256",
            id="long-regex",
        ),
        pytest.param(
            {"type": "policy", "deny_providers": ["nope"], "node": single("a")},
            "unknown provider",
            id="policy-provider",
        ),
        pytest.param(
            {"type": "loadbalance", "sticky_on": "cookie", "targets": [{"weight": 1, "node": single("a")}]},
            "sticky_on",
            id="sticky",
        ),
        pytest.param({"type": "single", "model": "a", "extra": 1}, "unknown field", id="unknown-field"),
        pytest.param({"type": "smarter", "model": "a"}, "Invalid value 'smarter'", id="unknown-type"),
    ],
)
def test_config_errors(strategy: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        routing_config(strategy)
    assert message in str(info.value)


def test_deep_tree_refused() -> None:
    node: dict[str, Any] = single("a")
    for _ in range(11):
        node = {"type": "fallback", "targets": [node]}
    with pytest.raises(ConfigError, match="deeper than 10"):
        routing_config(node)


def test_a_model_matched_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match="matched by an earlier rule"):
        routing_config(single("a"), extra_rules=[{"name": "r2", "match": ["auto"], "strategy": single("b")}])
