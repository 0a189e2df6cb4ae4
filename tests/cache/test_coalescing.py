"""Request coalescing: 100 identical concurrent requests make exactly one
upstream call (the simulator counts), and all 100 callers get the answer —
unary and streamed.  The exact cache is off here, so only coalescing can
explain the single call.  Joiners are accounted as such: RequestCompleted
with cache_status "coalesced" and attempts 0, and no UsageRecorded (the
leader's usage is the only charge)."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from ingress.gateway.front import NODE
from streams.events import RequestCompleted, RequestFailed, UsageRecorded
from tests.cache.conftest import close_stack, make_stack

N = 100


async def test_100_identical_unary_requests_one_upstream_call(valkey_url: str, valkey_prefix: str) -> None:
    s = await make_stack(valkey_url, valkey_prefix, enabled=False)
    body = {"model": "slow-sim", "messages": [{"role": "user", "content": "coalesce me"}]}
    try:
        limits = httpx.Limits(max_connections=N)
        async with httpx.AsyncClient(
            headers={"Authorization": f"Bearer {s.key}"}, limits=limits, timeout=30
        ) as h:
            rs = await asyncio.gather(*(h.post(s.url + "/chat/completions", json=body) for _ in range(N)))
        assert s.upstream_calls == 1
        assert [r.status_code for r in rs] == [200] * N
        texts = {r.json()["choices"][0]["message"]["content"] for r in rs}
        assert len(texts) == 1 and texts.pop()
        assert Counter(r.headers["x-nexus-cache"] for r in rs) == {"MISS": 1, "COALESCED": N - 1}
        statuses = Counter(e.cache_status for e in s.events.events if isinstance(e, RequestCompleted))
        assert statuses == {"miss": 1, "coalesced": N - 1}
        usage = [e for e in s.events.events if isinstance(e, UsageRecorded)]
        assert len(usage) == 1 and usage[0].cost_usd > 0
    finally:
        await close_stack(s)


async def test_100_identical_streams_fan_out_from_one_upstream_call(
    valkey_url: str, valkey_prefix: str
) -> None:
    s = await make_stack(valkey_url, valkey_prefix, enabled=False)
    body = {"model": "slow-sim", "stream": True, "messages": [{"role": "user", "content": "stream to all"}]}

    async def one(h: httpx.AsyncClient) -> tuple[str, str]:
        async with h.stream("POST", s.url + "/chat/completions", json=body) as r:
            assert r.status_code == 200
            return r.headers["x-nexus-cache"], (await r.aread()).decode()

    try:
        limits = httpx.Limits(max_connections=N)
        async with httpx.AsyncClient(
            headers={"Authorization": f"Bearer {s.key}"}, limits=limits, timeout=30
        ) as h:
            results = await asyncio.gather(*(one(h) for _ in range(N)))
        assert s.upstream_calls == 1
        bodies = {b for _, b in results}
        assert len(bodies) == 1
        (stream,) = bodies
        assert stream.rstrip().endswith("data: [DONE]") and '"content"' in stream
        assert Counter(h for h, _ in results) == {"MISS": 1, "COALESCED": N - 1}
        assert len([e for e in s.events.events if isinstance(e, UsageRecorded)]) == 1
    finally:
        await close_stack(s)


async def test_different_requests_are_not_coalesced(valkey_url: str, valkey_prefix: str) -> None:
    s = await make_stack(valkey_url, valkey_prefix, enabled=False)
    try:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {s.key}"}, timeout=30) as h:
            rs = await asyncio.gather(
                *(
                    h.post(
                        s.url + "/chat/completions",
                        json={"model": "slow-sim", "messages": [{"role": "user", "content": f"q{i}"}]},
                    )
                    for i in range(5)
                )
            )
        assert [r.status_code for r in rs] == [200] * 5
        assert s.upstream_calls == 5
    finally:
        await close_stack(s)


async def test_a_leader_stream_that_breaks_breaks_for_every_joiner_in_its_format(
    valkey_url: str, valkey_prefix: str
) -> None:
    """Joiners get exactly what the leader's caller got, error frame
    included, and each is recorded as a failed request: nothing claims a
    complete answer that never came, and the broken stream is not cached."""
    from streams.events import RequestFailed

    s = await make_stack(valkey_url, valkey_prefix)
    body = {"model": "drop-sim", "stream": True, "messages": [{"role": "user", "content": "break for all"}]}

    async def one(h: httpx.AsyncClient) -> str:
        async with h.stream("POST", s.url + "/chat/completions", json=body) as r:
            return (await r.aread()).decode()

    try:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {s.key}"}, timeout=30) as h:
            bodies = await asyncio.gather(*(one(h) for _ in range(10)))
            assert s.upstream_calls == 1
            assert len(set(bodies)) == 1
            assert '"error"' in bodies[0] and "[DONE]" not in bodies[0]
            failed = [e for e in s.events.events if isinstance(e, RequestFailed)]
            assert len(failed) == 10
            again = await one(h)  # not served from the cache: the provider is called again
        assert s.upstream_calls == 2 and '"error"' in again
    finally:
        await close_stack(s)


async def test_joiners_keep_their_stream_when_the_leaders_caller_leaves(
    valkey_url: str, valkey_prefix: str
) -> None:
    s = await make_stack(valkey_url, valkey_prefix, enabled=False)
    body = {
        "model": "trickle-sim",
        "stream": True,
        "messages": [{"role": "user", "content": "a slow tale " * 8}],
    }
    auth = {"Authorization": f"Bearer {s.key}"}

    coalescer = s.gateway.runner.app[NODE].current.cache.coalescer

    def waiting() -> int:
        return sum(len(f.waiters) for f in coalescer._flights.values())

    async def leader() -> None:
        async with (
            httpx.AsyncClient(headers=auth, timeout=30) as h,
            h.stream("POST", s.url + "/chat/completions", json=body) as r,
        ):
            async for _ in r.aiter_bytes():
                # The first bytes; hang up once every joiner follows this
                # flight (a caller leaving with nobody waiting cuts the call).
                async with asyncio.timeout(10):
                    while waiting() < 5:
                        await asyncio.sleep(0.005)
                break

    async def joiner(h: httpx.AsyncClient) -> tuple[str, str]:
        async with h.stream("POST", s.url + "/chat/completions", json=body) as r:
            return r.headers["x-nexus-cache"], (await r.aread()).decode()

    try:
        lead = asyncio.create_task(leader())
        # Join once the leader's call has reached the provider (a fixed sleep
        # raced the leader on a loaded machine).
        async with asyncio.timeout(10):
            while s.upstream_calls < 1:
                await asyncio.sleep(0.01)
        async with httpx.AsyncClient(headers=auth, timeout=30) as h:
            joined = await asyncio.gather(*(joiner(h) for _ in range(5)))
        await lead
        assert s.upstream_calls == 1
        assert {c for c, _ in joined} == {"COALESCED"}
        assert all(b.rstrip().endswith("data: [DONE]") for _, b in joined)
    finally:
        await close_stack(s)


async def test_joiners_keep_a_unary_answer_when_the_leaders_caller_leaves(
    valkey_url: str, valkey_prefix: str
) -> None:
    # The leader's handler is cancelled when its caller hangs up (issue 12
    # item 6); the call it leads goes on for the joiners, and is accounted
    # once: the leader's 499 with the usage the call really had.
    s = await make_stack(valkey_url, valkey_prefix, enabled=False)
    body = {"model": "slow-sim", "messages": [{"role": "user", "content": "coalesce me, then leave"}]}
    auth = {"Authorization": f"Bearer {s.key}"}
    coalescer = s.gateway.runner.app[NODE].current.cache.coalescer

    def waiting() -> int:
        return sum(len(f.waiters) for f in coalescer._flights.values())

    try:
        async with httpx.AsyncClient(headers=auth, timeout=30) as lead_client:
            leader = asyncio.create_task(lead_client.post(s.url + "/chat/completions", json=body))
            async with asyncio.timeout(10):
                while s.upstream_calls < 1:
                    await asyncio.sleep(0.01)
            async with httpx.AsyncClient(headers=auth, timeout=30) as h:
                joiners = [
                    asyncio.create_task(h.post(s.url + "/chat/completions", json=body)) for _ in range(3)
                ]
                async with asyncio.timeout(10):
                    while waiting() < 3:
                        await asyncio.sleep(0.005)
                leader.cancel()  # the leader's caller hangs up
                await lead_client.aclose()
                rs = await asyncio.gather(*joiners)
        assert s.upstream_calls == 1
        assert [r.status_code for r in rs] == [200] * 3
        assert {r.headers["x-nexus-cache"] for r in rs} == {"COALESCED"}
        assert all(r.json()["choices"][0]["message"]["content"] for r in rs)
        async with asyncio.timeout(5):
            while not [e for e in s.events.events if isinstance(e, UsageRecorded)]:
                await asyncio.sleep(0.01)
        failed = [e for e in s.events.events if isinstance(e, RequestFailed)]
        assert [(e.status, e.error_code) for e in failed] == [(499, "client_closed")]
        usage = [e for e in s.events.events if isinstance(e, UsageRecorded)]
        # One charge: the leader's, from the provider's own report (the call ran to its end).
        assert len(usage) == 1 and not usage[0].estimated and usage[0].request_id == failed[0].request_id
        completed = [e for e in s.events.events if isinstance(e, RequestCompleted)]
        assert sorted(e.cache_status for e in completed) == ["coalesced"] * 3
    finally:
        await close_stack(s)
