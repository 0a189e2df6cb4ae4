"""Cutting a stream off when its reservation is used up.

A request under a hard budget holds a reservation for at most
``QuotaDecision.output_cap`` output tokens.  The gateway forwards
``max_tokens`` no larger than that; for providers that overrun it (or
count differently) the gateway meters the streamed text and ends the
stream once the cap is reached, so what is billed stays inside what was
reserved.
"""

from __future__ import annotations

import math

from ingress.quota.estimate import count_text, counting_rule


class StreamMeter:
    """Counts a stream's output against its cap.  Deltas are counted in
    bulk, and only once the cap could be near: no token is shorter than a
    byte, so while the bytes seen (inflated by the rule's factor) stay
    under the cap there is nothing to count yet -- which, for the usual
    answer far below its max_tokens, is always."""

    def __init__(
        self, cap_tokens: int | None, provider_kind: str = "openai", provider_model: str = ""
    ) -> None:
        self.cap = cap_tokens
        self.rule = counting_rule(provider_kind, provider_model)
        self._tokens = 0  # counted (inflated by the rule's factor)
        self._pending: list[str] = []  # not counted yet
        self._bound = 0  # bytes of the pending text: an upper bound of its tokens

    def note(self, delta: str) -> None:
        if delta:
            self._pending.append(delta)
            self._bound += len(delta.encode())

    def _settle(self) -> None:
        if self._pending:
            self._tokens += count_text("".join(self._pending), self.rule)
            self._pending.clear()
            self._bound = 0

    def _within(self, limit: float) -> bool:
        if self._tokens + math.ceil(self._bound * self.rule.factor) < limit:
            return True  # even if every pending byte were a token
        self._settle()
        return self._tokens < limit

    def add(self, delta: str) -> bool:
        """Count a streamed text delta; False once the cap is reached (the
        gateway then ends the stream)."""
        self.note(delta)
        return self.cap is None or self._within(self.cap)

    def within_slack(self) -> bool:
        """The uninflated count within the cap plus a little slack (see
        ingress.pipeline.stages.quota.within)."""
        if self.cap is None:
            return True
        slack = max(4, self.cap // 20)
        # tokens / factor <= cap + slack, on the inflated count
        return self._within((self.cap + slack) * self.rule.factor + 1e-9)

    @property
    def tokens(self) -> int:
        self._settle()
        return self._tokens

    @property
    def exhausted(self) -> bool:
        return self.cap is not None and self.tokens >= self.cap
