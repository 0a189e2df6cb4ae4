"""Weighted load balancing and A/B splits converge to their weights over
10,000 decisions.  The draws are seeded (the test is reproducible) and the
bound is a chi-square critical value at p = 1e-6, so only a wrong
implementation fails it, never bad luck on a re-seed."""

from __future__ import annotations

import random
import uuid
from collections import Counter

import pytest

from ingress.routing import RouteContext, decide
from tests.routing.helpers import routing_config

N = 10_000
# Chi-square critical values at p = 1e-6 by degrees of freedom.
CRITICAL = {1: 23.93, 2: 27.63, 3: 30.66}


def chi_square(counts: Counter[str], weights: dict[str, float]) -> float:
    total = sum(weights.values())
    return sum((counts[k] - N * w / total) ** 2 / (N * w / total) for k, w in weights.items())


WEIGHTS = {"a": 5.0, "b": 3.0, "c": 1.5, "d": 0.5}


def lb_config(sticky_on: str | None = None) -> object:
    return routing_config(
        {
            "type": "loadbalance",
            "sticky_on": sticky_on,
            "targets": [{"weight": w, "node": {"type": "single", "model": m}} for m, w in WEIGHTS.items()],
        }
    )


@pytest.mark.parametrize("seed", [7, 2026])
def test_weighted_loadbalance_converges(seed: int) -> None:
    cfg = lb_config()
    models = {m.name: m for m in cfg.models}  # type: ignore[attr-defined]
    rng = random.Random(seed)
    rule = cfg.routing.rules[0]  # type: ignore[attr-defined]
    counts: Counter[str] = Counter(
        decide(rule, RouteContext(model="auto"), {}, models=models, allowed=lambda n: True, rng=rng)
        .candidates[0]
        .model
        for _ in range(N)
    )
    assert chi_square(counts, WEIGHTS) < CRITICAL[3], counts
    # and the shares are visibly right, not just statistically
    assert abs(counts["a"] / N - 0.5) < 0.03 and abs(counts["d"] / N - 0.05) < 0.015


def test_sticky_loadbalance_converges_over_sessions() -> None:
    """With stickiness the draw is a hash: 10,000 distinct sessions still
    spread by weight."""
    cfg = lb_config("header:x-session")
    models = {m.name: m for m in cfg.models}  # type: ignore[attr-defined]
    rule = cfg.routing.rules[0]  # type: ignore[attr-defined]
    gen = random.Random(3)
    counts: Counter[str] = Counter()
    for _ in range(N):
        ctx = RouteContext(model="auto", headers={"x-session": str(uuid.UUID(int=gen.getrandbits(128)))})
        counts[
            decide(rule, ctx, {}, models=models, allowed=lambda n: True, rng=random.Random(0))
            .candidates[0]
            .model
        ] += 1
    assert chi_square(counts, WEIGHTS) < CRITICAL[3], counts


def test_ab_split_converges_per_key() -> None:
    cfg = routing_config(
        {
            "type": "ab_split",
            "arms": [
                {"name": "control", "weight": 90, "model": "a"},
                {"name": "treatment", "weight": 10, "model": "c"},
            ],
        }
    )
    models = {m.name: m for m in cfg.models}
    rule = cfg.routing.rules[0]
    counts: Counter[str] = Counter()
    for i in range(N):
        ctx = RouteContext(model="auto", key={"id": f"key-{i}"})
        counts[decide(rule, ctx, {}, models=models, allowed=lambda n: True, rng=random.Random(0)).arm] += 1
    assert chi_square(counts, {"control": 90, "treatment": 10}) < CRITICAL[1], counts


def test_a_skewed_split_would_fail_the_bound() -> None:
    """The bound has teeth: 52/48 observed against 50/50 weights fails."""
    assert chi_square(Counter({"a": 5200, "b": 4800}), {"a": 1, "b": 1}) > CRITICAL[1] - 8
    assert chi_square(Counter({"a": 5300, "b": 4700}), {"a": 1, "b": 1}) > CRITICAL[1]
