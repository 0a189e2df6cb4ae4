"""Per-target circuit breakers (closed -> open -> half-open -> closed).

Closed: failures inside a sliding window are counted; ``failures`` of them
open the breaker.  Open: the target is reported ``unavailable`` (routing
orders it last) until ``open_s`` has passed.  Half-open: up to
``half_open_probes`` requests go through; a success closes the breaker, a
failure opens it again.  State is per gateway node (each node judges the
upstream from its own vantage point), and the clock is injected for tests.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable

from prometheus_client import Counter, Gauge

from streams.config_routing import Breaker as BreakerConfig

BREAKER_STATE = Gauge(
    "nexus_circuit_breaker_state", "0 closed, 1 half-open, 2 open, per routed target", ["target"]
)
BREAKER_OPENED = Counter("nexus_circuit_breaker_opened_total", "Times a target's breaker opened", ["target"])


class BreakerState(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class _Breaker:
    __slots__ = ("failures", "opened_at", "probes", "state")

    def __init__(self) -> None:
        self.state = BreakerState.CLOSED
        self.failures: deque[float] = deque()
        self.opened_at = 0.0
        self.probes = 0


class Breakers:
    def __init__(self, config: BreakerConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self._by_target: dict[str, _Breaker] = {}

    def adopt(self, previous: Breakers, keep: Callable[[str], bool]) -> None:
        """Take over ``previous``'s breakers (a new config snapshot) for the
        targets ``keep`` says are unchanged: what the node learnt about a
        failing upstream survives an unrelated config change."""
        for target, b in previous._by_target.items():
            if keep(target):
                self._by_target[target] = b

    def _get(self, target: str) -> _Breaker:
        b = self._by_target.get(target)
        if b is None:
            b = self._by_target[target] = _Breaker()
        return b

    def _set(self, target: str, b: _Breaker, state: BreakerState) -> None:
        b.state = state
        BREAKER_STATE.labels(target).set(int(state))

    def state(self, target: str) -> BreakerState:
        b = self._by_target.get(target)
        if b is None:
            return BreakerState.CLOSED
        if b.state is BreakerState.OPEN and self.clock() - b.opened_at >= self.config.open_s:
            self._set(target, b, BreakerState.HALF_OPEN)
            b.probes = 0
        return b.state

    def health(self, target: str) -> str:
        if not self.config.enabled:
            return "healthy"
        s = self.state(target)
        if s is BreakerState.CLOSED:
            return "healthy"
        if s is BreakerState.OPEN:
            return "unavailable"
        return "probing" if self._get(target).probes < self.config.half_open_probes else "degraded"

    def allow(self, target: str) -> bool:
        """Whether an attempt may go to ``target`` now (a half-open breaker
        lets ``half_open_probes`` through, then refuses until one answers)."""
        if not self.config.enabled:
            return True
        s = self.state(target)
        if s is BreakerState.CLOSED:
            return True
        if s is BreakerState.OPEN:
            return False
        b = self._get(target)
        if b.probes < self.config.half_open_probes:
            b.probes += 1
            return True
        return False

    def release(self, target: str) -> None:
        """An attempt that ended with no verdict on the target (a policy
        refusal, a cancelled request) gives its half-open probe slot back."""
        b = self._by_target.get(target)
        if b is not None and b.state is BreakerState.HALF_OPEN and b.probes > 0:
            b.probes -= 1

    def success(self, target: str) -> None:
        b = self._by_target.get(target)
        if b is None:
            return
        if b.state is not BreakerState.CLOSED:
            self._set(target, b, BreakerState.CLOSED)
        b.failures.clear()

    def failure(self, target: str) -> None:
        if not self.config.enabled:
            return
        now = self.clock()
        b = self._get(target)
        if self.state(target) is BreakerState.HALF_OPEN:
            self._open(target, b, now)
            return
        if b.state is BreakerState.OPEN:
            return
        b.failures.append(now)
        while b.failures and now - b.failures[0] > self.config.window_s:
            b.failures.popleft()
        if len(b.failures) >= self.config.failures:
            self._open(target, b, now)

    def _open(self, target: str, b: _Breaker, now: float) -> None:
        self._set(target, b, BreakerState.OPEN)
        b.opened_at = now
        b.failures.clear()
        b.probes = 0
        BREAKER_OPENED.labels(target).inc()
