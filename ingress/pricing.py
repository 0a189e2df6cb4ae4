"""Cost of one request's usage, from the model's price per million tokens.

Cached prompt tokens (reads) are billed at ``cached_input``, cache writes at
``cache_write``, the remaining prompt tokens at ``input``; reasoning tokens
at ``reasoning`` and the remaining completion tokens at ``output``.  The
optional prices default to input / input / output (see ``streams.config.Price``).
"""

from __future__ import annotations

from streams.config import Price
from streams.events import Usage

_PER = 1_000_000


def cost_usd(price: Price | None, usage: Usage) -> float | None:
    """The USD cost, or None when the model has no price (recorded as unpriced)."""
    if price is None:
        return None
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    written = min(usage.cache_creation_tokens, usage.prompt_tokens - cached)
    uncached = usage.prompt_tokens - cached - written
    reasoning = min(usage.reasoning_tokens, usage.completion_tokens)
    plain_output = usage.completion_tokens - reasoning
    cached_price = price.input if price.cached_input is None else price.cached_input
    write_price = price.input if price.cache_write is None else price.cache_write
    reasoning_price = price.output if price.reasoning is None else price.reasoning
    total = (
        uncached * price.input
        + cached * cached_price
        + written * write_price
        + plain_output * price.output
        + reasoning * reasoning_price
    )
    return total / _PER
