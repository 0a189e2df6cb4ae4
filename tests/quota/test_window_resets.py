"""Budgets reset when their window does: calendar windows at local midnight
in the org's zone, rolling windows as spend ages out.  Time is injected;
counters are the real Valkey ones, written by the processor's settle path."""

from __future__ import annotations

from typing import Any

import pytest

from ingress.quota import QuotaGate
from processors.quota.settle import Settler
from streams import codec
from streams.quota_counters import QuotaPolicy
from tests.quota.helpers import config, usage_event
from tests.quota.test_config_windows import ms

pytestmark = pytest.mark.integration

QUOTAS = """
quotas:
  budgets:
    - {id: daily, unit: tokens, limit: 1000, window: day, per: [key], match: {model: big}}
    - {id: hourly, unit: tokens, limit: 1000, window: 1h, per: [key], match: {model: small}}
    - {id: monthly-eu, unit: tokens, limit: 1000, window: month, match: {org: acme-eu}}
"""


class World:
    def __init__(self, vk: Any, prefix: str) -> None:
        cfg = config(QUOTAS)
        policy = QuotaPolicy(cfg, prefix)
        self.gate = QuotaGate(vk, policy)
        self.settler = Settler(vk, policy)
        self.seq = 0
        self.n = 0

    async def spend(self, tokens: int, at: int, *, key: str = "k1", model: str = "big") -> None:
        self.seq += 1
        org, project, user = {"k1": ("acme", "web", "alice"), "k2": ("acme-eu", "eu-app", "")}[key]
        ev = usage_event(
            request_id=f"w{self.seq}",
            key=key,
            org=org,
            project=project,
            user=user,
            model=model,
            prompt=tokens,
            completion=0,
            at_ms=at,
        )
        await self.settler.apply([(codec.encode(ev), self.seq)])

    async def fits(self, tokens: int, at: int, *, key: str = "k1", model: str = "big") -> bool:
        self.n += 1
        org, project, user = {"k1": ("acme", "web", "alice"), "k2": ("acme-eu", "eu-app", "")}[key]
        d = await self.gate.check(
            request_id=f"c{self.n}",
            org=org,
            project=project,
            key=key,
            user=user,
            model=model,
            prompt_tokens=tokens,
            max_output_tokens=0,
            now_ms=at,
        )
        if d.admitted:
            await self.gate.release(f"c{self.n}")
        return d.admitted


async def test_day_resets_at_midnight_in_the_orgs_zone_not_utc(vk: Any, valkey_prefix: str) -> None:
    w = World(vk, valkey_prefix)
    ny = "America/New_York"
    await w.spend(900, ms(2026, 11, 23, 18, 50, tz=ny))  # 23:50 UTC
    assert not await w.fits(200, ms(2026, 11, 23, 18, 55, tz=ny))
    # Midnight UTC passes: acme's day (New York) has not ended.
    assert not await w.fits(200, ms(2026, 11, 23, 19, 10, tz=ny))
    assert await w.fits(100, ms(2026, 11, 23, 23, 59, tz=ny))
    # Local midnight: a fresh day.
    assert await w.fits(1000, ms(2026, 11, 24, 0, 0, tz=ny))


async def test_rolling_hour_forgets_spend_after_an_hour(vk: Any, valkey_prefix: str) -> None:
    w = World(vk, valkey_prefix)
    t0 = ms(2026, 11, 24, 10, 0)
    await w.spend(600, t0, model="small")
    await w.spend(300, t0 + 30 * 60_000, model="small")
    assert not await w.fits(200, t0 + 59 * 60_000, model="small")
    # One minute (one bucket) past the hour, the first 600 have aged out...
    assert await w.fits(700, t0 + 61 * 60_000, model="small")
    assert not await w.fits(701, t0 + 61 * 60_000, model="small")
    # ...and 90 minutes later the rest.
    assert await w.fits(1000, t0 + 91 * 60_000, model="small")


async def test_month_of_a_child_org_in_its_own_zone(vk: Any, valkey_prefix: str) -> None:
    w = World(vk, valkey_prefix)
    berlin = "Europe/Berlin"
    await w.spend(950, ms(2026, 11, 30, 23, 30, tz=berlin), key="k2")
    assert not await w.fits(100, ms(2026, 11, 30, 23, 45, tz=berlin), key="k2")
    assert await w.fits(900, ms(2026, 12, 1, 0, 1, tz=berlin), key="k2")
