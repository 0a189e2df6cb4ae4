"""The rate limiter against the real Valkey: a sliding window shared by
every engine (node) that points at the same server."""

# ruff: noqa: E501 - tables of prompts and YAML read better unwrapped

from __future__ import annotations

import asyncio

import pytest
import valkey.asyncio as avalkey

from ingress.hooks import Connection, Verdict

pytestmark = pytest.mark.integration

RL = "pipeline: [{{id: rl, type: rate-limiter, stage: connection, settings: {{max_requests: {n}, window_seconds: {w}, key_type: {k}}}}}]"


@pytest.fixture
async def valkey_client(valkey_url):
    client = avalkey.from_url(valkey_url)
    yield client
    await client.aclose()


async def test_limit_per_key_across_two_nodes(make_engine, valkey_client, valkey_prefix) -> None:
    cfg = RL.format(n=3, w=30, k="key")
    node_a = make_engine(cfg, valkey=valkey_client, key_prefix=valkey_prefix)
    node_b = make_engine(cfg, valkey=valkey_client, key_prefix=valkey_prefix)
    me = Connection(key_id="k-1")
    results = [await (node_a if i % 2 else node_b).evaluate_connection(me) for i in range(4)]
    assert [r.decision for r in results] == [Verdict.APPROVE] * 3 + [Verdict.BLOCK]
    last = results[-1]
    assert last.reason_code == "rate_limited" and last.blocking_rule == "key:3/30s"
    retry = next(t for t in last.tags if t.startswith("retry_after_ms:"))
    assert 0 < int(retry.split(":")[1]) <= 30_000
    # another key has its own window
    assert (await node_a.evaluate_connection(Connection(key_id="k-2"))).decision is Verdict.APPROVE
    assert await valkey_client.zcard(f"{valkey_prefix}rl:rl:key:k-1") == 3


async def test_window_slides(make_engine, valkey_client, valkey_prefix) -> None:
    engine = make_engine(RL.format(n=2, w=0.4, k="ip"), valkey=valkey_client, key_prefix=valkey_prefix)
    me = Connection(client_ip="203.0.113.9")
    assert [(await engine.evaluate_connection(me)).decision for _ in range(3)] == [
        Verdict.APPROVE,
        Verdict.APPROVE,
        Verdict.BLOCK,
    ]
    await asyncio.sleep(0.45)
    assert (await engine.evaluate_connection(me)).decision is Verdict.APPROVE


async def test_concurrent_requests_never_overshoot(make_engine, valkey_client, valkey_prefix) -> None:
    engine = make_engine(RL.format(n=10, w=30, k="org"), valkey=valkey_client, key_prefix=valkey_prefix)
    me = Connection(org_id="acme")
    results = await asyncio.gather(*(engine.evaluate_connection(me) for _ in range(40)))
    assert sum(r.decision is Verdict.APPROVE for r in results) == 10


async def test_valkey_down_follows_fail_mode(make_engine, valkey_prefix) -> None:
    dead = avalkey.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    closed = make_engine(
        "pipeline: [{id: rl, type: rate-limiter, fail: closed, settings: {max_requests: 1, window_seconds: 1}}]",
        valkey=dead,
        key_prefix=valkey_prefix,
    )
    from tests.hooks.conftest import chat

    out = await closed.evaluate_request(chat("hi"), Connection(key_id="k"))
    assert out.result.blocked and out.result.reason_code == "hook_error"
    await dead.aclose()
