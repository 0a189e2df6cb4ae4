"""The circuit breaker around the embedder: a failing or slow embedder
makes lookups skip (the request goes on as a miss, never waits past the
embed timeout), opens the breaker so the embedder is left alone, and a
probe closes it again once the embedder recovers.  The failing embedders
are injected implementations of the ``Embedder`` interface; the real
model answers the probe."""

from __future__ import annotations

import time
from typing import Any

import pytest

from ingress.cache.semantic import Embedder
from ingress.cache.semantic.cache import BREAKER_TARGET
from ingress.cache.store import Entry
from ingress.routing.breaker import BreakerState
from streams.config_routing import Breaker
from tests.semantic_cache.conftest import make_cache

pytestmark = pytest.mark.integration


class Flaky:
    """The real model, or failures / stalls when told to."""

    def __init__(self, real: Embedder) -> None:
        self.real = real
        self.version = real.version
        self.mode = "ok"
        self.calls = 0

    def embed(self, text: str) -> Any:
        self.calls += 1
        if self.mode == "fail":
            raise RuntimeError("onnxruntime session died")
        if self.mode == "slow":
            time.sleep(0.3)
        return self.real.embed(text)

    def residue(self, text: str) -> str:
        return self.real.residue(text)


BREAKER = Breaker(failures=3, window_s=30.0, open_s=0.3)


async def test_failures_open_the_breaker_and_a_probe_closes_it(
    embedder: Embedder, valkey_client: Any, valkey_prefix: str
) -> None:
    flaky = Flaky(embedder)
    cache = make_cache(valkey_client, valkey_prefix, flaky, breaker=BREAKER)
    probe = await cache.lookup("p", "key:k-1", "What is the capital of France?")
    await cache.fill(probe, Entry(kind="response", content_type="application/json", body=b"Paris"))

    flaky.mode = "fail"
    outcomes = [
        (await cache.lookup("p", "key:k-1", "Which city is the capital of France?")).outcome for _ in range(5)
    ]
    assert outcomes == ["embed_error"] * 3 + ["breaker_open"] * 2
    assert flaky.calls == 1 + 3  # once open, the embedder is not called at all
    assert cache.breakers.state(BREAKER_TARGET) is BreakerState.OPEN

    flaky.mode = "ok"
    time.sleep(0.35)  # open_s: the next lookup is the half-open probe
    recovered = await cache.lookup("p", "key:k-1", "Which city is the capital of France?")
    assert recovered.hit is not None and recovered.hit.entry.body == b"Paris"
    assert cache.breakers.state(BREAKER_TARGET) is BreakerState.CLOSED
    await cache.close()


async def test_a_slow_embedder_is_cut_at_the_timeout_and_counts_as_a_failure(
    embedder: Embedder, valkey_client: Any, valkey_prefix: str
) -> None:
    flaky = Flaky(embedder)
    flaky.mode = "slow"
    cache = make_cache(valkey_client, valkey_prefix, flaky, breaker=BREAKER, embed_timeout_s=0.05, workers=4)
    started = time.perf_counter()
    outcomes = [(await cache.lookup("p", "key:k-1", f"question {i}")).outcome for i in range(4)]
    elapsed = time.perf_counter() - started
    assert outcomes == ["embed_timeout"] * 3 + ["breaker_open"]
    assert elapsed < 0.3 * 3  # nobody waited for the stalled embedder
    await cache.close()


async def test_a_busy_pool_skips_the_lookup_instead_of_queueing(
    embedder: Embedder, valkey_client: Any, valkey_prefix: str
) -> None:
    import asyncio

    flaky = Flaky(embedder)
    flaky.mode = "slow"
    cache = make_cache(valkey_client, valkey_prefix, flaky, workers=1, embed_timeout_s=1.0)
    first, second = await asyncio.gather(
        cache.lookup("p", "key:k-1", "one question"), cache.lookup("p", "key:k-1", "another question")
    )
    assert {first.outcome, second.outcome} == {"miss", "busy"}
    assert cache.breakers.state(BREAKER_TARGET) is BreakerState.CLOSED  # busy is not the embedder's fault
    await cache.close()


async def test_identical_prompts_in_flight_share_one_embedding(
    embedder: Embedder, valkey_client: Any, valkey_prefix: str
) -> None:
    import asyncio

    flaky = Flaky(embedder)
    flaky.mode = "slow"
    cache = make_cache(valkey_client, valkey_prefix, flaky, workers=1, embed_timeout_s=2.0)
    probes = await asyncio.gather(*(cache.lookup("p", "key:k-1", "the same question") for _ in range(20)))
    assert {p.outcome for p in probes} == {"miss"} and all(p.vector is not None for p in probes)
    assert flaky.calls == 1
    await cache.lookup("p", "key:k-1", "the same question")  # a recent vector: no call either
    assert flaky.calls == 1
    await cache.close()


async def test_valkey_failing_at_lookup_is_a_miss_that_keeps_the_vector(
    embedder: Embedder, valkey_client: Any, valkey_prefix: str
) -> None:
    import valkey.asyncio as avalkey

    cache = make_cache(valkey_client, valkey_prefix, embedder, timeout_s=0.5)
    probe = await cache.lookup("p", "key:k-1", "What is the capital of France?")
    eid = await cache.fill(probe, Entry(kind="response", content_type="application/json", body=b"Paris"))
    down = avalkey.from_url("redis://127.0.0.1:1/0")  # type: ignore[no-untyped-call]
    cache.client = down
    failed = await cache.lookup("p", "key:k-1", "Which city is the capital of France?")
    assert failed.hit is None and failed.outcome == "store_error"
    assert eid in cache.index  # a transient error does not forget the entry
    cache.client = valkey_client
    back = await cache.lookup("p", "key:k-1", "Which city is the capital of France?")
    assert back.hit is not None and back.hit.entry.body == b"Paris"
    await down.aclose()
    await cache.close()
