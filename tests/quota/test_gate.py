"""The hot-path check against the real Valkey: reserve on every axis at
once or not at all, decide, release, expire, and read usage."""

from __future__ import annotations

from typing import Any

import pytest

from ingress.quota import QuotaGate, key_usage
from processors.quota.settle import Settler
from streams import codec
from streams.quota_counters import QuotaPolicy
from tests.quota.helpers import config, counter_value, usage_event

pytestmark = pytest.mark.integration

T0 = 1_795_000_000_000  # a fixed instant (2026-11-19 UTC); time is injected


def gate_for(vk: Any, prefix: str, quotas: str) -> tuple[QuotaGate, Settler]:
    cfg = config(quotas)
    policy = QuotaPolicy(cfg, prefix)
    return QuotaGate(vk, policy, provider_kinds={"sim": "openai"}), Settler(vk, policy)


async def check(
    gate: QuotaGate,
    rid: str,
    *,
    key: str = "k1",
    model: str = "big",
    out: int = 100,
    now: int = T0,
    **kw: Any,
):
    subj = {"k1": ("acme", "web", "alice"), "k2": ("acme-eu", "eu-app", ""), "k3": ("other", "misc", "")}[key]
    return await gate.check(
        request_id=rid,
        org=subj[0],
        project=subj[1],
        key=key,
        user=subj[2],
        model=model,
        prompt_tokens=kw.pop("prompt", 100),
        max_output_tokens=out,
        now_ms=now,
        **kw,
    )


async def test_hard_budget_reserves_worst_case_and_rejects_with_headers(vk: Any, valkey_prefix: str) -> None:
    gate, _ = gate_for(
        vk,
        valkey_prefix,
        "quotas: {budgets: [{id: cap, unit: usd, limit: 0.01, window: day, match: {org: acme}}]}",
    )
    # Worst case of one request: 100 in @ $2/M + 500 out @ $8/M = $0.0042.
    first = await check(gate, "r1", out=500)
    second = await check(gate, "r2", out=500)
    third = await check(gate, "r3", out=500)
    assert first.admitted and second.admitted
    assert not third.admitted and third.error_code == "QUOTA_EXCEEDED" and third.limit_id == "cap"
    h = third.headers()
    assert h["X-Nexus-Quota-Limit"].startswith("0.010000 usd")
    assert int(h["Retry-After"]) > 0
    assert first.headers()["X-Nexus-Quota-Remaining"] == "0.005800"
    # Releasing a failed request gives its hold back; the third now fits.
    assert await gate.release("r2") == 1
    assert (await check(gate, "r3", out=500)).admitted


async def test_all_axes_or_none(vk: Any, valkey_prefix: str) -> None:
    gate, _ = gate_for(
        vk,
        valkey_prefix,
        """
quotas:
  budgets:
    - {id: org, unit: usd, limit: 100, window: month, match: {org: acme}}
    - {id: tokens-big, unit: tokens, limit: 1000, window: 1h, match: {model: big}}
""",
    )
    ok = await check(gate, "a", prompt=100, out=500)
    assert ok.admitted
    no = await check(gate, "b", prompt=100, out=500)
    assert not no.admitted and no.limit_id == "tokens-big"
    # The rejected request held nothing on the org budget either.
    org = next(c for c in no.counters if c.limit_id == "org")
    assert org.held == pytest.approx(
        ok.counters[0].request if ok.counters[0].limit_id == "org" else ok.counters[1].request
    )
    usage = await key_usage(gate, "k1", now_ms=T0)
    assert usage is not None
    by_id = {u.id: u for u in usage.limits}
    assert by_id["tokens-big"].reserved == 600 and by_id["tokens-big"].remaining == 400
    assert by_id["tokens-big"].model == "big"


async def test_unpriced_model_fails_closed_under_a_usd_budget(vk: Any, valkey_prefix: str) -> None:
    gate, _ = gate_for(
        vk, valkey_prefix, "quotas: {budgets: [{id: spend, unit: usd, limit: 1000, window: day, per: [key]}]}"
    )
    d = await check(gate, "u1", model="free-ish")
    assert not d.admitted and d.error_code == "QUOTA_MODEL_UNPRICED"
    assert (await check(gate, "u2", model="small")).admitted


async def test_rate_limits_rpm_and_tpm_slide(vk: Any, valkey_prefix: str) -> None:
    gate, settler = gate_for(
        vk, valkey_prefix, "quotas: {rate_limits: [{id: rl, per: [key], rpm: 3, tpm: 100000}]}"
    )
    for i in range(3):
        assert (await check(gate, f"q{i}", now=T0 + i * 1000)).admitted
    d = await check(gate, "q3", now=T0 + 3000)
    assert not d.admitted and d.error_code == "RATE_LIMITED" and d.limit_id == "rl.rpm"
    assert d.headers()["x-ratelimit-remaining-requests"] == "0"
    # Settle the three (the processor's job), then 60 s after the first one
    # a slot frees up, not before.
    cfg_events = [usage_event(request_id=f"q{i}", at_ms=T0 + i * 1000) for i in range(3)]
    await settler.apply([(codec.encode(e), i + 1) for i, e in enumerate(cfg_events)])
    assert not (await check(gate, "q4", now=T0 + 59_000)).admitted
    assert (await check(gate, "q5", now=T0 + 60_500)).admitted


async def test_crashed_requests_reservations_expire(vk: Any, valkey_prefix: str) -> None:
    gate, _ = gate_for(
        vk,
        valkey_prefix,
        "quotas: {reservation_ttl_s: 30,"
        " budgets: [{id: cap, unit: tokens, limit: 1000, window: day, per: [key]}]}",
    )
    assert (await check(gate, "c1", prompt=400, out=400)).admitted
    assert not (await check(gate, "c2", prompt=400, out=400, now=T0 + 29_000)).admitted
    # 30 s later nobody settled c1: its hold is released by the next call.
    assert (await check(gate, "c3", prompt=400, out=400, now=T0 + 31_000)).admitted
    (counter,) = gate.policy.counters(gate.policy.key_subject["k1"], T0 + 31_000)
    assert await counter_value(vk, counter.held_key) == 800


async def test_soft_warns_and_downgrade_switches_model(vk: Any, valkey_prefix: str) -> None:
    gate, _ = gate_for(
        vk,
        valkey_prefix,
        """
quotas:
  budgets:
    - {id: soft, unit: usd, limit: 0.001, window: day, action: soft, alert_at: [0.8], match: {org: acme}}
    - id: big-daily
      unit: usd
      limit: 0.0015
      window: day
      action: downgrade
      downgrade_to: small
      match: {model: big}
    - {id: track, unit: tokens, limit: 1, window: day, action: track}
""",
    )
    d = await check(gate, "s1", prompt=100, out=100)  # $0.001 on big: over soft, within big-daily
    assert d.admitted and d.model == "big"
    assert "soft=" in d.headers()["X-Nexus-Quota-Warning"]
    d2 = await check(gate, "s2", prompt=100, out=100)  # big-daily would go over: downgrade
    assert d2.admitted and d2.model == "small" and d2.downgraded
    h = d2.headers()
    assert h["X-Nexus-Quota-Downgrade"] == "small" and h["X-Nexus-Quota-Original-Model"] == "big"
    # The reservation is on the model actually used: nothing more held on big-daily.
    big = await key_usage(gate, "k1", now_ms=T0)
    assert big is not None
    assert next(u for u in big.limits if u.id == "big-daily").reserved == pytest.approx(0.001)


async def test_stream_is_cut_at_the_reserved_output(vk: Any, valkey_prefix: str) -> None:
    from ingress.quota import StreamMeter

    gate, _ = gate_for(vk, valkey_prefix, "quotas: {budgets: [{id: cap, unit: usd, limit: 1, window: day}]}")
    d = await check(gate, "st1", out=50)
    assert d.admitted and d.output_cap == 50
    meter = StreamMeter(d.output_cap)
    sent = 0
    for _ in range(200):  # a provider that would stream on and on
        if not meter.add(" word"):
            break
        sent += 1
    assert 40 <= sent < 50 and meter.exhausted
    # Soft or track-only budgets do not cap the output.
    soft, _ = gate_for(
        vk,
        valkey_prefix + "s:",
        "quotas: {budgets: [{id: s, unit: usd, limit: 1, window: day, action: soft}]}",
    )
    assert (await check(soft, "st2", out=50)).output_cap is None


async def test_quota_store_down_fails_closed(valkey_prefix: str) -> None:
    import valkey.asyncio as valkey

    from ingress.quota import QuotaUnavailable

    dead = valkey.Valkey.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    gate, _ = gate_for(
        dead, valkey_prefix, "quotas: {budgets: [{id: cap, unit: usd, limit: 1, window: day}]}"
    )
    with pytest.raises(QuotaUnavailable):
        await check(gate, "down")
    await dead.aclose()


async def test_a_worst_case_past_what_the_store_counts_is_decided_not_unreachable(
    vk: Any, valkey_prefix: str
) -> None:
    """10**15 output tokens at $8/M is 8 * 10**18 nano-dollars: Valkey's
    INCRBY refused what the script's doubles printed it as, and the request
    was answered "quota store unreachable".  (The API now bounds max_tokens;
    the gate must not depend on every caller doing so.)"""
    gate, _ = gate_for(
        vk,
        valkey_prefix,
        """
quotas:
  budgets:
    - {id: soft, unit: usd, limit: 1, window: day, action: soft, match: {org: acme}}
    - {id: hard, unit: tokens, limit: 1000000, window: day, match: {key: k2}}
""",
    )
    huge = 10**15
    soft = await check(gate, "huge-soft", out=huge)
    assert soft.admitted and soft.reserved
    hard = await check(gate, "huge-hard", key="k2", out=huge)
    assert not hard.admitted and hard.error_code == "QUOTA_EXCEEDED"
