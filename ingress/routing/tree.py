"""The routing decision as a pure function:
``decide(rule, context, health, ...) -> Decision`` — the ordered candidate
models and, step by step, why.  No I/O and no clock: randomness comes in as
an ``random.Random`` (seeded in tests) and stickiness is a hash of the
sticky value, so every gateway node draws the same target for the same
session without sharing state."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ingress.routing.predicates import matches
from streams.config import Model
from streams.config_routing import (
    AbSplit,
    Conditional,
    Fallback,
    LoadBalance,
    Policy,
    Rule,
    Single,
    Smart,
    StrategyNode,
)

# "probing": a half-open breaker with a probe slot free keeps its place, so
# real traffic tests whether the target recovered.
Health = Literal["healthy", "probing", "degraded", "unavailable"]
_RANK: dict[str, int] = {"healthy": 0, "probing": 0, "degraded": 1, "unavailable": 2}


@dataclass(frozen=True)
class RouteContext:
    """What predicates and stickiness may look at (headers lower-cased)."""

    model: str
    endpoint: str = ""
    stream: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)
    key: Mapping[str, str] = field(default_factory=dict)  # id, org, project, user
    metadata: Mapping[str, Any] = field(default_factory=dict)  # org < project < key labels

    def as_mapping(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "endpoint": self.endpoint,
            "stream": self.stream,
            "headers": self.headers,
            "key": self.key,
            "metadata": self.metadata,
        }

    def sticky_value(self, sticky_on: str | None) -> str | None:
        if sticky_on is None or sticky_on == "none":
            return None
        if sticky_on.startswith("header:"):
            return self.headers.get(sticky_on[len("header:") :].lower()) or None
        field = "id" if sticky_on == "key" else sticky_on  # user, org, project
        return self.key.get(field) or None


@dataclass(frozen=True)
class Candidate:
    model: str
    provider: str
    health: str


@dataclass(frozen=True)
class Decision:
    rule: str
    candidates: tuple[Candidate, ...]
    # Classes of failure on which the next candidate is tried (empty: the
    # first candidate's answer is final).
    fallback_on: frozenset[str]
    steps: tuple[str, ...]
    refused: tuple[str, ...] = ()  # picked by the tree, not allowed for the key
    arm: str = ""  # the A/B arm, when a split decided

    def explain(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "target": self.candidates[0].model if self.candidates else None,
            "candidates": [
                {"model": c.model, "provider": c.provider, "health": c.health} for c in self.candidates
            ],
            "fallback_on": sorted(self.fallback_on),
            "arm": self.arm or None,
            "refused_for_key": list(self.refused),
            "steps": list(self.steps),
        }


def sticky_draw(value: str, path: str) -> float:
    """A uniform number in [0, 1) that depends only on (value, node)."""
    digest = hashlib.sha256(f"{path}\0{value}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def weighted_pick(weights: list[float], u: float) -> int:
    total = sum(weights)
    acc = 0.0
    for i, w in enumerate(weights):
        acc += w / total
        if u < acc:
            return i
    return len(weights) - 1


class _Walk:
    __slots__ = ("arm", "ctx", "fallback_on", "health", "mapping", "models", "rng", "smart_pick", "steps")

    def __init__(
        self,
        ctx: RouteContext,
        health: Mapping[str, str],
        models: Mapping[str, Model],
        rng: random.Random,
    ) -> None:
        self.ctx = ctx
        self.mapping = ctx.as_mapping()
        self.health = health
        self.models = models
        self.rng = rng
        self.steps: list[str] = []
        self.fallback_on: set[str] = set()
        self.arm = ""
        self.smart_pick: str | None = None

    def available(self, names: list[str]) -> bool:
        return any(self.health.get(n, "healthy") != "unavailable" for n in names)

    def node(self, node: StrategyNode, path: str) -> list[str]:
        if isinstance(node, Single):
            return [node.model]
        if isinstance(node, Fallback):
            self.fallback_on.update(node.on_failure)
            self.steps.append(f"{path}: fallback chain on {', '.join(node.on_failure)}")
            out: list[str] = []
            for i, t in enumerate(node.targets):
                out.extend(self.node(t, f"{path}.targets[{i}]"))
            return out
        if isinstance(node, LoadBalance):
            return self._weighted(
                path,
                [w.weight for w in node.targets],
                [lambda p, n=w.node: self.node(n, p) for w in node.targets],  # type: ignore[misc]
                node.sticky_on,
                "loadbalance",
                [f"targets[{i}]" for i in range(len(node.targets))],
            )
        if isinstance(node, AbSplit):
            picked = self._weighted(
                path,
                [a.weight for a in node.arms],
                [lambda _p, m=a.model: [m] for a in node.arms],  # type: ignore[misc]
                node.sticky_on,
                "ab_split",
                [f"arm {a.name!r}" for a in node.arms],
            )
            for a in node.arms:
                if picked == [a.model]:
                    self.arm = a.name
                    break
            return picked
        if isinstance(node, Smart):
            if self.smart_pick is None:
                self.steps.append(f"{path}: smart, no router pick: default {node.default!r}")
                return [node.default]
            self.fallback_on.update(node.on_failure)
            self.steps.append(
                f"{path}: smart, router {node.router!r} picked {self.smart_pick!r} "
                f"(then default {node.default!r} on {', '.join(node.on_failure)})"
            )
            return [self.smart_pick, node.default]
        if isinstance(node, Conditional):
            for i, c in enumerate(node.conditions):
                if matches(c.when, self.mapping):
                    self.steps.append(f"{path}: condition {i} matched")
                    return self.node(c.then, f"{path}.conditions[{i}].then")
            if node.default is None:
                self.steps.append(f"{path}: no condition matched and no default")
                return []
            self.steps.append(f"{path}: no condition matched, default")
            return self.node(node.default, f"{path}.default")
        assert isinstance(node, Policy)
        inner = self.node(node.node, f"{path}.node")
        kept = [m for m in inner if self._allowed_by(node, m)]
        dropped = [m for m in inner if m not in kept]
        if dropped:
            self.steps.append(f"{path}: policy removed {', '.join(dropped)}")
        return kept

    def _allowed_by(self, p: Policy, name: str) -> bool:
        provider = self.models[name].provider if name in self.models else ""
        if p.allow_models and name not in p.allow_models:
            return False
        if p.allow_providers and provider not in p.allow_providers:
            return False
        return name not in p.deny_models and provider not in p.deny_providers

    def _weighted(
        self,
        path: str,
        weights: list[float],
        branches: list[Callable[[str], list[str]]],
        sticky_on: str | None,
        what: str,
        labels: list[str],
    ) -> list[str]:
        # Each branch is walked aside first so an arm whose targets are all
        # unavailable (breaker open) is not drawn while another one is up.
        outcomes: list[tuple[list[str], list[str], set[str]]] = []
        for i, branch in enumerate(branches):
            saved = (self.steps, self.fallback_on)
            self.steps, self.fallback_on = [], set()
            names = branch(f"{path}.{labels[i]}")
            outcomes.append((names, self.steps, self.fallback_on))
            self.steps, self.fallback_on = saved
        live = [i for i, (names, _, _) in enumerate(outcomes) if names and self.available(names)]
        pool = live or [i for i, (names, _, _) in enumerate(outcomes) if names] or list(range(len(branches)))
        value = self.ctx.sticky_value(sticky_on)
        u = sticky_draw(value, path) if value is not None else self.rng.random()
        chosen = pool[weighted_pick([weights[i] for i in pool], u)]
        share = weights[chosen] / sum(weights[i] for i in pool)
        how = f"sticky on {sticky_on}" if value is not None else "random draw"
        skipped = len(branches) - len(pool)
        extra = f", {skipped} unavailable skipped" if skipped else ""
        self.steps.append(f"{path}: {what} chose {labels[chosen]} (p={share:.3f}, {how}{extra})")
        names, steps, fallback_on = outcomes[chosen]
        self.steps.extend(steps)
        self.fallback_on.update(fallback_on)
        return names


def decide(
    rule: Rule,
    ctx: RouteContext,
    health: Mapping[str, str],
    *,
    models: Mapping[str, Model],
    allowed: Callable[[str], bool],
    rng: random.Random,
    smart_pick: str | None = None,
) -> Decision:
    """``smart_pick``: what the router of a root smart node answered, once
    checked against its catalog and the key (None: the default serves)."""
    walk = _Walk(ctx, health, models, rng)
    walk.smart_pick = smart_pick
    walk.steps.append(f"rule {rule.name!r} matched model {ctx.model!r}")
    picked = walk.node(rule.strategy, "strategy")
    seen: set[str] = set()
    ordered: list[str] = []
    for name in picked:
        if name not in seen:
            seen.add(name)
            ordered.append(name)
    # The key's allowed models filter last, so no branch of the tree (a
    # fallback, an A/B arm) can reach a model the key may not call.
    refused = tuple(n for n in ordered if not allowed(n))
    if refused:
        walk.steps.append(f"not allowed for this key: {', '.join(refused)}")
    kept = [n for n in ordered if allowed(n)]
    # Healthy before degraded before unavailable; never dropped (a breaker
    # may be wrong, and a last resort beats a certain error).
    kept.sort(key=lambda n: _RANK.get(health.get(n, "healthy"), 0))
    candidates = tuple(
        Candidate(n, models[n].provider if n in models else "", health.get(n, "healthy")) for n in kept
    )
    return Decision(
        rule=rule.name,
        candidates=candidates,
        fallback_on=frozenset(walk.fallback_on),
        steps=tuple(walk.steps),
        refused=refused,
        arm=walk.arm,
    )
