"""Cost from a price per million tokens: each kind of token at its price
(an unpriced model is recorded priced=false: tests/gateway/test_sdk.py)."""

from __future__ import annotations

import pytest

from ingress.quota.pricing import price_usage
from streams.config import Price
from streams.events import Usage

CASES = [
    pytest.param(
        Price(input=1, output=2), Usage(prompt_tokens=1_000_000, completion_tokens=500_000), 2.0, id="plain"
    ),
    pytest.param(
        Price(input=1, output=2),
        Usage(prompt_tokens=1_000_000, cached_tokens=400_000),
        1.0,
        id="cached_defaults_to_input",
    ),
    pytest.param(
        Price(input=1, output=2, cached_input=0.25),
        Usage(prompt_tokens=1_000_000, cached_tokens=400_000),
        0.6 + 0.1,
        id="cached_at_cached_price",
    ),
    pytest.param(
        Price(input=1, output=2, cache_write=1.25),
        Usage(prompt_tokens=1_000_000, cache_creation_tokens=200_000),
        0.8 + 0.25,
        id="cache_write",
    ),
    pytest.param(
        Price(input=1, output=2, reasoning=3),
        Usage(completion_tokens=1_000_000, reasoning_tokens=100_000),
        1.8 + 0.3,
        id="reasoning",
    ),
    pytest.param(
        Price(input=1, output=2, cached_input=0.5),
        Usage(prompt_tokens=10, cached_tokens=50),
        5e-6,
        id="cached_over_prompt_is_capped",
    ),
]


@pytest.mark.parametrize(("price", "usage", "expected"), CASES)
def test_cost(price: Price, usage: Usage, expected: float) -> None:
    assert price_usage(price, usage) == pytest.approx(expected)
