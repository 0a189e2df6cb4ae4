"""The whole loop on the real services: reservations in Valkey, usage
events on JetStream, the FastStream quota processor settling them."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from ingress.quota import QuotaGate
from ingress.quota.resp import PipelinedValkey
from processors.quota import QuotaProcessor, replay_quotas
from streams import codec
from streams.config import NexusConfig
from streams.events import now_ms
from streams.events_quota import QuotaAlert
from streams.jetstream import connect, ensure_streams
from streams.quota_counters import QuotaPolicy, calendar_window, usd_to_nano
from streams.topology import Topology
from tests.quota.helpers import config, counter_value, publish, usage_event

pytestmark = pytest.mark.integration


@pytest.fixture
async def js(nats_url: str, topology: Topology) -> AsyncIterator[Any]:
    nc = await connect(nats_url, name="quota-test")
    ctx = nc.jetstream()
    await ensure_streams(ctx, topology)
    yield ctx
    for spec in topology.streams():
        with contextlib.suppress(Exception):
            await ctx.delete_stream(spec.name)
    await nc.drain()


async def running(
    cfg: NexusConfig, nats_url: str, valkey_url: str, topology: Topology, prefix: str
) -> QuotaProcessor:
    proc = QuotaProcessor(cfg, nats_url=nats_url, valkey_url=valkey_url, topology=topology, key_prefix=prefix)
    await proc.start()
    return proc


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


@pytest.mark.parametrize(
    ("quotas", "unit"),
    [
        pytest.param(
            "quotas: {budgets: [{id: cap, unit: usd, limit: 0.25, window: day, match: {org: acme}}]}",
            "usd",
            id="hard-usd-cap-on-org",
        ),
        pytest.param(
            "quotas: {budgets: [{id: cap, unit: tokens, limit: 40000, window: 1h, match: {model: big}}]}",
            "tokens",
            id="hard-token-cap-on-model",
        ),
    ],
)
@pytest.mark.parametrize("client_kind", ["valkey-py-pool", "pipelined"])
async def test_500_concurrent_requests_never_overshoot_a_hard_cap(
    quotas: str,
    unit: str,
    client_kind: str,
    nats_url: str,
    valkey_url: str,
    valkey_prefix: str,
    topology: Topology,
    vk: Any,
    js: Any,
) -> None:
    cfg = config(quotas)
    proc = await running(cfg, nats_url, valkey_url, topology, valkey_prefix)
    policy = QuotaPolicy(cfg, valkey_prefix)
    # The gateway's own pipelined connection, or a valkey-py pool (both
    # are what a deployment may hand the gate).
    client = PipelinedValkey.from_url(valkey_url) if client_kind == "pipelined" else vk
    gate = QuotaGate(client, policy)
    r = random.Random(7)
    max_out = 200
    plan = [
        (r.random() * 0.6, 40 + r.randrange(120), r.randrange(max_out + 1), r.random() * 0.05)
        for _ in range(1500)
    ]

    async def one(i: int, spread: bool = True) -> Any:
        start, prompt, completion, upstream_s = plan[i]
        if spread:
            await asyncio.sleep(start)  # arrivals over 0.6 s, all overlapping the settle lag
        d = await gate.check(
            request_id=f"r{i}",
            org="acme",
            project="web",
            key="k1",
            user="alice",
            model="big",
            prompt_tokens=prompt,
            max_output_tokens=max_out,
        )
        if not d.admitted:
            assert d.error_code == "QUOTA_EXCEEDED"
            return None
        await asyncio.sleep(upstream_s)
        ev = usage_event(request_id=f"r{i}", prompt=prompt, completion=completion, cfg=cfg)
        await publish(js, topology, ev)
        return ev

    try:
        results = await asyncio.gather(*(one(i) for i in range(500)))
        admitted = [e for e in results if e is not None]
        first_wave = len(admitted)
        assert await proc.wait_until_caught_up(15)
        # Holds are worst cases, so the burst leaves headroom once settled:
        # waves of 50 concurrent requests use it up until nothing fits.
        nxt = 500
        while nxt < len(plan):
            wave = [e for e in await asyncio.gather(*(one(i, False) for i in range(nxt, nxt + 50))) if e]
            nxt += 50
            assert await proc.wait_until_caught_up(15)
            if not wave:
                break
            admitted += wave
        (counter,) = policy.counters(_subject(policy), admitted[0].occurred_at_ms)
        shown: Callable[[int], str]
        if unit == "usd":
            spend = sum(usd_to_nano(e.cost_usd) for e in admitted)
            cap = usd_to_nano(0.25)
            one_max = usd_to_nano((159 * 2.0 + max_out * 8.0) / 1e6)
            shown = lambda v: f"${v / 1e9:.6f}"  # noqa: E731
        else:
            spend = sum(e.usage.total_tokens for e in admitted)
            cap, one_max = 40000, 159 + max_out
            shown = lambda v: f"{v} tokens"  # noqa: E731
        value = await (
            counter_value(vk, counter.spent_key)
            if not counter.rolling
            else _rolling_sum(vk, counter.spent_key)
        )
        held = await counter_value(vk, counter.held_key)
        print(
            f"\n[{unit}] 500 concurrent: admitted={first_wave} rejected={500 - first_wave}; "
            f"then {nxt - 500} more in waves of 50 until nothing fit: admitted={len(admitted) - first_wave}; "
            f"admitted spend={shown(spend)} cap={shown(cap)} "
            f"cap+one max_tokens request={shown(cap + one_max)} "
            f"counter={shown(value)} held after settle={held}"
        )
        assert spend <= cap + one_max
        assert value == spend  # the counter is exactly the sum of the usage events
        assert held == 0  # every reservation settled
        assert first_wave < 500  # the cap did bind under concurrency
        # ...and exactly: once everything settled, the cap is used up to
        # within one request's worst case, never past one.
        assert cap - one_max <= spend
    finally:
        await proc.stop()
        if client is not vk:
            await client.aclose()


def _subject(policy: QuotaPolicy) -> Any:
    import msgspec

    return msgspec.structs.replace(policy.key_subject["k1"], provider="sim", model="big")


async def _rolling_sum(vk: Any, key: str) -> int:
    v = await vk.hget(key, "sum")
    return int(v) if v else 0


async def test_redelivered_and_republished_events_count_once(
    nats_url: str, valkey_url: str, valkey_prefix: str, topology: Topology, vk: Any, js: Any
) -> None:
    cfg = config("quotas: {budgets: [{id: spend, unit: usd, limit: 100, window: month, per: [key]}]}")
    events = [usage_event(request_id=f"d{i}", prompt=100 + i, completion=50, cfg=cfg) for i in range(50)]
    for e in events:
        await publish(js, topology, e)
    # The same events again under new message ids: past JetStream's duplicate
    # window (an outbox drained late) they are stored twice in the stream.
    for e in events[:20]:
        await publish(js, topology, e, msg_id=f"late-{e.id}")
    proc = await running(cfg, nats_url, valkey_url, topology, valkey_prefix)
    try:
        assert await proc.wait_until_caught_up(10)
    finally:
        await proc.stop()
    policy = QuotaPolicy(cfg, valkey_prefix)
    (counter,) = policy.counters(_subject(policy), events[0].occurred_at_ms)
    expected = sum(usd_to_nano(e.cost_usd) for e in events)
    assert await counter_value(vk, counter.spent_key) == expected
    # A replay from sequence 1 rebuilds the same number.
    report = await replay_quotas(
        cfg, nats_url=nats_url, valkey_url=valkey_url, topology=topology, key_prefix=valkey_prefix
    )
    assert report.events == 70 and report.applied == 50 and report.duplicates == 20
    assert await counter_value(vk, counter.spent_key) == expected


async def test_soft_threshold_alerts_exactly_once_per_threshold_per_window(
    nats_url: str, valkey_url: str, valkey_prefix: str, topology: Topology, vk: Any, js: Any
) -> None:
    cfg = config(
        "quotas: {budgets: [{id: soft, unit: usd, limit: 0.01, window: day, action: soft,"
        " alert_at: [0.5, 0.8, 1.0], match: {org: acme}}]}"
    )
    alerts: list[QuotaAlert] = []
    sub = await js.subscribe(topology.traffic_subject("quota.alert"), ordered_consumer=True)

    async def collect() -> None:
        async for msg in sub.messages:
            alerts.append(codec.decode(msg.data))

    collector = asyncio.create_task(collect())
    # Today and tomorrow (alerts are only armed for windows still open).
    day1 = now_ms()
    w1, _, end1 = calendar_window("day", day1, "America/New_York")
    w2 = calendar_window("day", end1 + 1000, "America/New_York")[0]
    proc = await running(cfg, nats_url, valkey_url, topology, valkey_prefix)
    try:
        # 30 requests of $0.0006: crosses 50 %, 80 % and 100 % of $0.01 once each.
        for i in range(30):
            await publish(
                js,
                topology,
                usage_event(request_id=f"a{i}", prompt=100, completion=50, at_ms=day1 + i, cfg=cfg),
            )
        assert await proc.wait_until_caught_up(10)
        await asyncio.sleep(0.3)
        assert sorted(a.threshold for a in alerts) == [0.5, 0.8, 1.0]
        assert {a.window_id for a in alerts} == {w1}
        first = next(a for a in alerts if a.threshold == 0.5)
        assert first.budget_id == "soft" and first.spent >= 0.005 and first.tenant.org_id == "acme"
        await proc.stop()
        # A replay recounts everything and must not alert again.
        await replay_quotas(
            cfg, nats_url=nats_url, valkey_url=valkey_url, topology=topology, key_prefix=valkey_prefix
        )
        proc = await running(cfg, nats_url, valkey_url, topology, valkey_prefix)
        # The next day is a new window: its crossings alert again.
        for i in range(10):
            await publish(
                js,
                topology,
                usage_event(request_id=f"b{i}", prompt=100, completion=50, at_ms=end1 + 1000 + i, cfg=cfg),
            )
        assert await proc.wait_until_caught_up(10)
        await asyncio.sleep(0.3)
        assert sorted((a.window_id, a.threshold) for a in alerts) == [
            (w1, 0.5),
            (w1, 0.8),
            (w1, 1.0),
            (w2, 0.5),
        ]
    finally:
        await proc.stop()
        collector.cancel()
        await sub.unsubscribe()


async def test_a_batch_settled_twice_counts_once_and_releases_its_reservation(
    valkey_prefix: str, vk: Any
) -> None:
    # A crash after the settle script but before the acks: JetStream
    # redelivers the same messages (same sequences) to the next processor.
    from processors.quota.settle import Settler

    cfg = config("quotas: {budgets: [{id: cap, unit: tokens, limit: 10000, window: day, per: [key]}]}")
    policy = QuotaPolicy(cfg, valkey_prefix)
    gate = QuotaGate(vk, policy)
    settler = Settler(vk, policy)
    d = await gate.check(
        request_id="once", org="acme", project="web", key="k1", user="alice", model="big",
        prompt_tokens=100, max_output_tokens=900,
    )  # fmt: skip
    assert d.admitted
    ev = usage_event(request_id="once", prompt=100, completion=20, cfg=cfg)
    batch = [(codec.encode(ev), 41)]
    first = await settler.apply(batch)
    again = await settler.apply(batch)
    assert (first.applied, again.applied, again.duplicates) == (1, 0, 1)
    (counter,) = policy.counters(_subject(policy), ev.occurred_at_ms)
    assert await counter_value(vk, counter.spent_key) == 120  # actual usage, once
    assert await counter_value(vk, counter.held_key) == 0  # the 1000-token hold is gone
    assert await settler.position() == 41


async def test_an_alert_marked_before_a_crash_is_published_once_on_restart(
    nats_url: str, valkey_url: str, valkey_prefix: str, topology: Topology, vk: Any, js: Any
) -> None:
    from processors.quota.settle import Settler

    cfg = config(
        "quotas: {budgets: [{id: soft, unit: usd, limit: 0.001, window: day, action: soft,"
        " alert_at: [0.5], match: {org: acme}}]}"
    )
    policy = QuotaPolicy(cfg, valkey_prefix)
    # A processor that died right after its settle script: the crossing is
    # marked and its alert pending in Valkey, but nothing was published.
    dying = Settler(vk, policy)
    ev = usage_event(request_id="x1", prompt=100, completion=50, cfg=cfg)  # $0.0006 of $0.001
    assert (await dying.apply([(codec.encode(ev), 1)])).alerts == 1
    assert await vk.hlen(policy.keys.pending_alerts) == 1
    proc = await running(cfg, nats_url, valkey_url, topology, valkey_prefix)
    try:
        assert proc.settler is not None
        assert await proc.settler.flush_alerts() == 0  # start-up already sent it
    finally:
        await proc.stop()
    assert await vk.hlen(policy.keys.pending_alerts) == 0
    info = await js.stream_info(topology.traffic_stream)
    assert info.state.messages == 1
    msg = await js.get_msg(topology.traffic_stream, info.state.last_seq)
    alert = codec.decode(msg.data)
    assert isinstance(alert, QuotaAlert) and alert.threshold == 0.5 and alert.request_id == "x1"
    # Sent again (a crash between publish and forgetting it): JetStream drops it.
    await publish(js, topology, alert, msg_id=alert.alert_key)
    assert (await js.stream_info(topology.traffic_stream)).state.messages == 1
