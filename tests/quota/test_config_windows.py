"""The quotas config section and the time windows (pure, no services)."""

from __future__ import annotations

import datetime as dt

import pytest

from ingress.quota.pricing import price_usage
from streams.config_base import ConfigError
from streams.events import Usage
from streams.quota_counters import QuotaPolicy, Subject, calendar_window
from tests.quota.helpers import config


def ms(y: int, mo: int, d: int, h: int = 0, mi: int = 0, tz: str = "UTC") -> int:
    from zoneinfo import ZoneInfo

    return int(dt.datetime(y, mo, d, h, mi, tzinfo=ZoneInfo(tz)).timestamp() * 1000)


@pytest.mark.parametrize(
    ("quotas", "message"),
    [
        pytest.param(
            "quotas: {budgets: [{id: b, unit: usd, limit: 1, window: day, typo: 1}]}",
            "typo",
            id="unknown-key",
        ),
        pytest.param(
            "quotas: {budgets: [{id: b, unit: usd, limit: 1, window: fortnight}]}", "window", id="bad-window"
        ),
        pytest.param(
            "quotas: {budgets: [{id: b, unit: usd, limit: 0, window: day}]}", "positive", id="zero-limit"
        ),
        pytest.param(
            "quotas: {budgets: [{id: b, unit: usd, limit: 1, window: day, match: {org: nope}}]}",
            "unknown org",
            id="unknown-org",
        ),
        pytest.param(
            "quotas: {budgets: [{id: b, unit: usd, limit: 1, window: day, action: downgrade}]}",
            "downgrade_to",
            id="downgrade-without-target",
        ),
        pytest.param(
            "quotas: {budgets: [{id: b, unit: usd, limit: 1, window: day, action: downgrade,"
            " downgrade_to: gpt-9}]}",
            "unknown model",
            id="downgrade-unknown-model",
        ),
        pytest.param(
            "quotas: {budgets: [{id: b, unit: usd, limit: 1, window: day},"
            " {id: b, unit: tokens, limit: 1, window: 1h}]}",
            "duplicate",
            id="duplicate-id",
        ),
        pytest.param("quotas: {rate_limits: [{id: r}]}", "rpm, tpm", id="rate-limit-empty"),
        pytest.param(
            "quotas: {budgets: [{id: b, unit: usd, limit: 1, window: day, alert_at: [0]}]}",
            "alert_at",
            id="alert-zero",
        ),
        pytest.param(
            "quotas: {budgets: [{id: b, unit: usd, limit: 1, window: day, timezone: Mars/Base}]}",
            "time zone",
            id="bad-tz",
        ),
    ],
)
def test_bad_quota_config_is_a_clear_error(quotas: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config(quotas)
    assert message in str(err.value)


def test_pricing_counts_cache_and_reasoning_at_their_rates() -> None:
    from streams.config import Price

    price = Price(input=2.0, output=8.0, cached_input=0.5, cache_write=2.5, reasoning=10.0)
    u = Usage(
        prompt_tokens=1000,
        completion_tokens=500,
        cached_tokens=400,
        cache_creation_tokens=100,
        reasoning_tokens=200,
    )
    # 500 plain in @2 + 400 cached @0.5 + 100 writes @2.5 + 300 out @8 + 200 reasoning @10
    assert price_usage(price, u) == pytest.approx((1000 + 200 + 250 + 2400 + 2000) / 1e6)


def test_calendar_windows_follow_the_org_time_zone() -> None:
    # 23:30 in New York on Nov 23 is already Nov 24 in UTC.
    t = ms(2026, 11, 23, 23, 30, tz="America/New_York")
    wid, start, end = calendar_window("day", t, "America/New_York")
    assert wid == "d2026-11-23"
    assert start == ms(2026, 11, 23, tz="America/New_York")
    assert end == ms(2026, 11, 24, tz="America/New_York")
    assert calendar_window("day", t, "UTC")[0] == "d2026-11-24"
    # Weeks start on Monday (ISO) or Sunday; months at the 1st, local time.
    assert calendar_window("week", ms(2026, 11, 29, 12), "UTC")[0] == "w2026-11-23"
    assert calendar_window("week", ms(2026, 11, 29, 12), "UTC", "sunday")[0] == "w2026-11-29"
    wid, _, end = calendar_window("month", ms(2026, 12, 31, 23, 59, tz="Europe/Berlin"), "Europe/Berlin")
    assert wid == "m2026-12" and end == ms(2027, 1, 1, tz="Europe/Berlin")
    # A DST change day is 25 hours long, not 24.
    _, start, end = calendar_window("day", ms(2026, 11, 1, 12, tz="America/New_York"), "America/New_York")
    assert end - start == 25 * 3600 * 1000


def test_policy_picks_counters_on_every_axis_and_parent_orgs() -> None:
    cfg = config(
        """
quotas:
  budgets:
    - {id: acme-all, unit: usd, limit: 100, window: month, match: {org: acme}}
    - {id: per-key, unit: usd, limit: 5, window: day, per: [key]}
    - {id: big-tokens, unit: tokens, limit: 100000, window: 1h, match: {model: big}}
    - {id: per-user, unit: usd, limit: 1, window: week, per: [user]}
  rate_limits:
    - {id: rl, per: [key], rpm: 60, tpm: 10000}
"""
    )
    policy = QuotaPolicy(cfg, "p:")
    t = ms(2026, 11, 24, 12)
    eu = Subject(org="acme-eu", project="eu-app", key="k2", provider="sim", model="big")
    ids = {c.limit.id: c for c in policy.counters(eu, t)}
    # acme-eu is a child of acme: the parent's budget applies; k2 has no user.
    assert set(ids) == {"acme-all", "per-key", "big-tokens", "rl.rpm", "rl.tpm"}
    assert ids["per-key"].cid == "per-key|key=k2"
    # per-key counters of an org-owned key use that org's zone (Berlin).
    assert ids["per-key"].resets_at_ms == ms(2026, 11, 25, tz="Europe/Berlin")
    assert ids["acme-all"].window_id == "m2026-11"
    assert ids["big-tokens"].rolling and ids["big-tokens"].nbuckets == 60
    other = Subject(org="other", project="misc", key="k3", user="bob", provider="sim", model="small")
    assert {c.limit.id for c in policy.counters(other, t)} == {"per-key", "per-user", "rl.rpm", "rl.tpm"}
