"""Cutting a stream off when its reservation is used up.

A request under a hard budget holds a reservation for at most
``QuotaDecision.output_cap`` output tokens.  The gateway forwards
``max_tokens`` no larger than that; for providers that overrun it (or
count differently) the gateway meters the streamed text and ends the
stream once the cap is reached, so what is billed stays inside what was
reserved.
"""

from __future__ import annotations

from ingress.quota.estimate import count_text, counting_rule


class StreamMeter:
    def __init__(
        self, cap_tokens: int | None, provider_kind: str = "openai", provider_model: str = ""
    ) -> None:
        self.cap = cap_tokens
        self.rule = counting_rule(provider_kind, provider_model)
        self.tokens = 0

    def add(self, delta: str) -> bool:
        """Count a streamed text delta; False once the cap is reached (the
        gateway then ends the stream with finish_reason "length")."""
        # Per-delta counts over-count slightly (a token split across two
        # deltas counts twice): the safe direction for a cap.
        self.tokens += count_text(delta, self.rule)
        return self.cap is None or self.tokens < self.cap

    @property
    def exhausted(self) -> bool:
        return self.cap is not None and self.tokens >= self.cap
