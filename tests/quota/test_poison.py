"""Poison on the quota processor's subject, against real NATS and Valkey:
what can never be settled goes to the dead-letter subject and the counters
hold exactly the good events; a re-drive meant for another consumer is
passed, one meant for the quota processor is settled."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from processors.quota import QuotaProcessor
from streams import codec, deadletter
from streams.events import Usage
from streams.jetstream import connect, ensure_streams
from streams.pull import REDRIVE_HEADER
from streams.quota_counters import QuotaPolicy, Subject
from streams.topology import Topology
from tests.quota.helpers import config, counter_value, publish, usage_event

pytestmark = pytest.mark.integration

CFG = config("quotas: {budgets: [{id: toks, unit: tokens, limit: 100000000, window: month, per: [key]}]}")


@pytest.fixture
async def js(nats_url: str, topology: Topology) -> AsyncIterator[Any]:
    nc = await connect(nats_url, name="quota-poison-test")
    ctx = nc.jetstream()
    await ensure_streams(ctx, topology)
    yield ctx
    for name in [s.name for s in topology.streams()] + [deadletter.stream_name(topology)]:
        with contextlib.suppress(Exception):
            await ctx.delete_stream(name)
    await nc.close()


def _counter(prefix: str, at_ms: int) -> str:
    policy = QuotaPolicy(CFG, prefix)
    subject = Subject(org="acme", project="web", key="k1", user="alice", provider="sim", model="big")
    (counter,) = policy.counters(subject, at_ms)
    return counter.spent_key


async def test_poison_is_dead_lettered_and_the_counters_stay_exact(
    nats_url: str, valkey_url: str, valkey_prefix: str, topology: Topology, vk: Any, js: Any
) -> None:
    good = [usage_event(request_id=f"g{i}", prompt=10 * i, completion=5) for i in range(1, 4)]
    subject = topology.traffic_subject("usage.recorded")
    huge = msgspec.structs.replace(
        good[0], id="ev-huge", request_id="huge", usage=Usage(prompt_tokens=2**60, total_tokens=2**60)
    )
    negative = msgspec.structs.replace(
        good[0], id="ev-neg", request_id="neg", usage=Usage(prompt_tokens=-500, total_tokens=-500)
    )
    poison = {
        "out_of_range": codec.encode(huge),
        # A negative token count would give spend back: never settled.
        "negative": codec.encode(negative),
        "undecodable": b"\x00\x01 not json",
        "surrogate": b'{"type":"usage.recorded","id":"ev-sur","model":"big\\udc00"}',
        "new_version": b'{"type":"usage.recorded","id":"ev-v9","v":9,"usage":{"prompt_tokens":1}}',
    }
    await publish(js, topology, good[0])
    seqs = {}
    for kind, raw in poison.items():
        seqs[kind] = (await js.publish(subject, raw, headers={"Nats-Msg-Id": f"p-{kind}"})).seq
    for ev in good[1:]:
        await publish(js, topology, ev)

    proc = QuotaProcessor(
        CFG, nats_url=nats_url, valkey_url=valkey_url, topology=topology, key_prefix=valkey_prefix
    )
    await proc.start()
    try:
        assert await proc.wait_until_caught_up(10)
    finally:
        await proc.stop()

    expected = sum(e.usage.total_tokens for e in good)
    assert await counter_value(vk, _counter(valkey_prefix, good[0].occurred_at_ms)) == expected
    letters = {d.stream_seq: d for d in await deadletter.entries(js, topology, consumer="quota")}
    assert letters[seqs["out_of_range"]].code == "out_of_range"
    assert letters[seqs["negative"]].code == "out_of_range"
    assert letters[seqs["undecodable"]].code == "undecodable"
    assert letters[seqs["surrogate"]].code == "invalid_surrogate"
    assert letters[seqs["new_version"]].code == "unsupported_version"
    assert len(letters) == len(poison)


async def test_a_redrive_is_settled_only_by_the_consumer_it_is_for(
    nats_url: str, valkey_url: str, valkey_prefix: str, topology: Topology, vk: Any, js: Any
) -> None:
    subject = topology.traffic_subject("usage.recorded")
    for_projections = usage_event(request_id="r1", prompt=1000, completion=0)
    for_quota = usage_event(request_id="r2", prompt=7, completion=0)
    await js.publish(
        subject,
        codec.encode(for_projections),
        headers={"Nats-Msg-Id": "redrive:X_DEADLETTER:1", REDRIVE_HEADER: "projections"},
    )
    await js.publish(
        subject,
        codec.encode(for_quota),
        headers={"Nats-Msg-Id": "redrive:X_DEADLETTER:2", REDRIVE_HEADER: "quota"},
    )
    proc = QuotaProcessor(
        CFG, nats_url=nats_url, valkey_url=valkey_url, topology=topology, key_prefix=valkey_prefix
    )
    await proc.start()
    try:
        assert await proc.wait_until_caught_up(10)
    finally:
        await proc.stop()
    assert await counter_value(vk, _counter(valkey_prefix, for_quota.occurred_at_ms)) == 7


async def test_an_aborted_request_releases_its_reservation_even_on_an_older_consumer(
    nats_url: str, valkey_url: str, valkey_prefix: str, topology: Topology, vk: Any, js: Any
) -> None:
    """request.aborted (processors.reconcile) gives a reservation back; the
    processor's durable consumer made before that event existed (filtered on
    usage.recorded alone) is updated in place to read it too."""
    from nats.js.api import AckPolicy, ConsumerConfig

    from ingress.quota import QuotaGate
    from streams.events import RequestAborted

    await js.add_consumer(
        topology.traffic_stream,
        ConsumerConfig(
            durable_name="quota",
            ack_policy=AckPolicy.EXPLICIT,
            filter_subject=topology.traffic_subject("usage.recorded"),
        ),
    )
    policy = QuotaPolicy(CFG, valkey_prefix)
    d = await QuotaGate(vk, policy).check(
        request_id="cut", org="acme", project="web", key="k1", user="alice", model="big",
        prompt_tokens=100, max_output_tokens=900,
    )  # fmt: skip
    assert d.admitted and await vk.zscore(policy.keys.res_expiry, "cut") is not None
    aborted = RequestAborted(request_id="cut", cause="node_lost")
    await publish(js, topology, aborted)
    proc = QuotaProcessor(
        CFG, nats_url=nats_url, valkey_url=valkey_url, topology=topology, key_prefix=valkey_prefix
    )
    await proc.start()
    try:
        assert await proc.wait_until_caught_up(10)
    finally:
        await proc.stop()
    assert await vk.zscore(policy.keys.res_expiry, "cut") is None
    assert not await vk.exists(policy.keys.reservation("cut"))
    (counter,) = policy.counters(
        Subject(org="acme", project="web", key="k1", user="alice", provider="sim", model="big"),
        aborted.occurred_at_ms,
    )
    assert await counter_value(vk, counter.held_key) == 0 and await counter_value(vk, counter.spent_key) == 0
