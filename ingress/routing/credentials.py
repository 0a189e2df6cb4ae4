"""A provider's weighted credential pool.

Each attempt draws one credential by weight among those not cooling down;
a credential the provider refused (401/403) or rate limited (429) cools
down for the pool's cooldown (or the provider's Retry-After, if longer)
and the attempt is made again with another one.  When every credential is
cooling down, the one back soonest is still tried: a certain error is no
better than a try.  State is per gateway node; the clock is injected for
tests, randomness comes in as a number in [0, 1)."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from ingress.routing.tree import weighted_pick

COOLDOWNS = Counter(
    "nexus_credential_cooldowns_total",
    "Times a pooled credential was benched (refused or rate limited)",
    ["provider", "credential", "reason"],
)
COOLING = Gauge(
    "nexus_credential_cooling",
    "1 while a pooled credential sits out its cooldown (as of the last draw)",
    ["provider", "credential"],
)


@dataclass
class Credential:
    id: str
    secret: str
    weight: float
    cooled_until: float = 0.0


class CredentialPool:
    __slots__ = ("clock", "cooldown_s", "entries", "provider")

    def __init__(
        self,
        provider: str,
        entries: list[Credential],
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider
        self.entries = entries
        self.cooldown_s = cooldown_s
        self.clock = clock

    def same_credentials(self, other: CredentialPool) -> bool:
        """Whether ``other`` pools the same credentials (ids, secrets and
        weights): then this pool's cool-downs still hold for it."""
        mine = [(c.id, c.secret, c.weight) for c in self.entries]
        theirs = [(c.id, c.secret, c.weight) for c in other.entries]
        return mine == theirs and self.cooldown_s == other.cooldown_s

    def _live(self, exclude: Collection[str], now: float) -> list[Credential]:
        return [c for c in self.entries if c.id not in exclude and c.cooled_until <= now]

    def pick(self, u: float, exclude: Collection[str] = ()) -> Credential | None:
        """A credential for the next attempt (``exclude``: those this request
        already tried); None when every one was tried."""
        now = self.clock()
        for c in self.entries:
            COOLING.labels(self.provider, c.id).set(1 if c.cooled_until > now else 0)
        live = self._live(exclude, now)
        if live:
            return live[weighted_pick([c.weight for c in live], u)]
        rest = [c for c in self.entries if c.id not in exclude]
        return min(rest, key=lambda c: c.cooled_until) if rest else None

    def has_another(self, exclude: Collection[str]) -> bool:
        """Whether a credential not yet tried is ready now."""
        return bool(self._live(exclude, self.clock()))

    def cool(self, credential: str, reason: str, retry_after_s: float | None = None) -> None:
        wait = max(self.cooldown_s, retry_after_s or 0.0)
        now = self.clock()
        for c in self.entries:
            if c.id == credential:
                c.cooled_until = max(c.cooled_until, now + wait)
                COOLDOWNS.labels(self.provider, c.id, reason).inc()
                COOLING.labels(self.provider, c.id).set(1)
