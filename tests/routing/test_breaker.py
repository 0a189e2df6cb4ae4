"""The breaker state machine on an injected clock."""

from __future__ import annotations

from ingress.routing import Breakers, BreakerState
from streams.config_routing import Breaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make() -> tuple[Breakers, Clock]:
    clock = Clock()
    return Breakers(Breaker(failures=3, window_s=10, open_s=5, half_open_probes=1), clock), clock


def test_failures_inside_the_window_open_it() -> None:
    b, clock = make()
    for _ in range(2):
        b.failure("t")
    clock.now += 11  # the first two age out of the window
    b.failure("t")
    assert b.state("t") is BreakerState.CLOSED
    b.failure("t")
    b.failure("t")
    assert b.state("t") is BreakerState.OPEN and b.health("t") == "unavailable"
    assert not b.allow("t")


def test_half_open_lets_one_probe_then_closes_or_reopens() -> None:
    b, clock = make()
    for _ in range(3):
        b.failure("t")
    clock.now += 5
    assert b.state("t") is BreakerState.HALF_OPEN and b.health("t") == "probing"
    assert b.allow("t")
    assert not b.allow("t") and b.health("t") == "degraded"  # one probe at a time
    b.failure("t")
    assert b.state("t") is BreakerState.OPEN
    clock.now += 5
    assert b.allow("t")
    b.success("t")
    assert b.state("t") is BreakerState.CLOSED and b.allow("t") and b.allow("t")


def test_a_probe_without_verdict_is_handed_back() -> None:
    b, clock = make()
    for _ in range(3):
        b.failure("t")
    clock.now += 5
    assert b.allow("t")
    b.release("t")
    assert b.allow("t")


def test_disabled_breaker_never_opens() -> None:
    b = Breakers(Breaker(enabled=False, failures=1))
    b.failure("t")
    assert b.allow("t") and b.health("t") == "healthy"
