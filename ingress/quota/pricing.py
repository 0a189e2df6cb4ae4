"""What a request cost: the one pricing function.  The gateway stamps its
figure on UsageRecorded; the quota processor and the read models use that
figure as recorded, so a price change never rewrites history."""

from __future__ import annotations

from streams.config import Price
from streams.events import Usage


def price_usage(price: Price, usage: Usage) -> float:
    """USD for one request's usage.

    Cached reads and cache writes are subsets of prompt_tokens, reasoning a
    subset of completion_tokens; each is capped at what it is a subset of,
    so a provider's inconsistent report never bills a token twice.
    ``cached_input`` / ``cache_write`` default to the input price,
    ``reasoning`` to the output price."""
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    written = min(usage.cache_creation_tokens, usage.prompt_tokens - cached)
    plain_in = usage.prompt_tokens - cached - written
    reasoning = min(usage.reasoning_tokens, usage.completion_tokens)
    plain_out = usage.completion_tokens - reasoning
    cached_in = price.input if price.cached_input is None else price.cached_input
    cache_write = price.input if price.cache_write is None else price.cache_write
    reasoning_price = price.output if price.reasoning is None else price.reasoning
    total = (
        plain_in * price.input
        + cached * cached_in
        + written * cache_write
        + plain_out * price.output
        + reasoning * reasoning_price
    )
    return total / 1_000_000
