"""The Valkey counter layout both sides of accounting agree on: which
counters a request touches (``QuotaPolicy.counters``), their keys and
windows, and the rolling-window Lua.

A contract of its own, kept in ``streams`` because it has two users that may
not import each other: ingress reserves on these counters before a request
is forwarded and processors/quota settles usage events on the very same
ones.  A change here changes both sides at once; a copy on each side could
drift and double-count or never release.  The ``quotas:`` section it is
compiled from is ``streams.config_quota``.

Amounts are integers everywhere below the config: nano-USD for money
(2**53 nano-USD is nine million dollars per counter, exact in Lua's doubles),
tokens for tokens, 1 per request for request rates.  Integer sums make a
replay bit-identical to the live counters.
"""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from collections.abc import Mapping
from functools import lru_cache

import msgspec

from streams.config import NexusConfig, Price
from streams.config_quota import Action, Axis, Match, QuotaConfig, Unit, rolling_seconds

NANO = 1_000_000_000  # nano-USD per USD


def usd_to_nano(usd: float) -> int:
    return round(usd * NANO)


# --- time windows ------------------------------------------------------------


@lru_cache(maxsize=256)
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


# (kind, tz, week_start) -> the last window computed: nearly every call on
# the hot path falls in the same window as the previous one.
_last_window: dict[tuple[str, str, str], tuple[str, int, int]] = {}


def calendar_window(kind: str, t_ms: int, tz: str, week_start: str = "monday") -> tuple[str, int, int]:
    """(window id, start ms, end ms) of the day/week/month holding ``t_ms``,
    with boundaries at local midnight in ``tz``."""
    cache_key = (kind, tz, week_start)
    hit = _last_window.get(cache_key)
    if hit is not None and hit[1] <= t_ms < hit[2]:
        return hit
    result = _calendar_window(kind, t_ms, tz, week_start)
    _last_window[cache_key] = result
    return result


def _calendar_window(kind: str, t_ms: int, tz: str, week_start: str) -> tuple[str, int, int]:
    zone = _zone(tz)
    local = dt.datetime.fromtimestamp(t_ms / 1000, tz=zone)
    day = local.date()
    if kind == "day":
        start, end = day, day + dt.timedelta(days=1)
        wid = f"d{start.isoformat()}"
    elif kind == "week":
        back = day.weekday() if week_start == "monday" else (day.weekday() + 1) % 7
        start = day - dt.timedelta(days=back)
        end = start + dt.timedelta(days=7)
        wid = f"w{start.isoformat()}"
    else:
        start = day.replace(day=1)
        end = (start + dt.timedelta(days=32)).replace(day=1)
        wid = f"m{start.year:04d}-{start.month:02d}"

    def midnight(d: dt.date) -> int:
        return int(dt.datetime(d.year, d.month, d.day, tzinfo=zone).timestamp() * 1000)

    return wid, midnight(start), midnight(end)


# --- the compiled policy -------------------------------------------------------


class Subject(msgspec.Struct, frozen=True):
    """What a request is, on every axis a limit can match."""

    org: str = ""
    project: str = ""
    key: str = ""
    user: str = ""
    provider: str = ""
    model: str = ""  # the canonical public model name


class Limit(msgspec.Struct, frozen=True):
    """A budget or one half (rpm or tpm) of a rate limit, in integer units."""

    id: str
    unit: Unit
    limit: int
    action: Action
    match: Match
    per: tuple[Axis, ...]
    calendar: str | None  # day | week | month, or None for rolling
    window_s: int  # rolling window length (0 for calendar)
    bucket_s: int
    alert_at: tuple[float, ...]
    downgrade_to: str | None
    timezone: str | None
    limit_display: float  # in config units (USD, tokens, requests)


class Counter(msgspec.Struct, frozen=True):
    """One counter instance for one request at one instant: the keys the
    reservation and the settlement touch, and how to read them."""

    limit: Limit
    cid: str  # limit id + the values of its per-axes
    window_id: str
    spent_key: str
    held_key: str
    alert_key: str
    rolling: bool
    bucket: int  # rolling bucket index (0 for calendar)
    nbuckets: int
    expire_at_ms: int  # spent/alert keys live until then
    resets_at_ms: int  # calendar: window end; rolling: when the oldest bucket leaves


class QuotaKeys:
    """The Valkey key layout under one prefix.  Processor-owned (wiped by a
    replay): ``q:s:*`` calendar spend, ``q:r:*`` rolling spend, ``q:p:*``
    processor position and processed ids.  Ingress-owned: ``q:h:*`` holds,
    ``q:res:*`` reservations.  ``q:a:*`` alert markers survive replays so an
    alert is never sent twice."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.res_expiry = f"{prefix}q:res:exp"
        self.res_prefix = f"{prefix}q:res:"
        self.position = f"{prefix}q:p:pos"
        self.processed = f"{prefix}q:p:ids"
        self.pending_alerts = f"{prefix}q:a:pending"

    def reservation(self, request_id: str) -> str:
        return f"{self.res_prefix}{request_id}"

    def processor_patterns(self) -> list[str]:
        return [f"{self.prefix}q:s:*", f"{self.prefix}q:r:*", f"{self.prefix}q:p:*"]


def org_chain(orgs: Mapping[str, str | None], org: str) -> tuple[str, ...]:
    """The org and its ancestors, nearest first (cycles are cut)."""
    chain: list[str] = []
    cur: str | None = org
    while cur and cur not in chain:
        chain.append(cur)
        cur = orgs.get(cur)
    return tuple(chain)


def _compile(q: QuotaConfig) -> list[Limit]:
    out: list[Limit] = []
    for b in q.budgets:
        window_s = rolling_seconds(b.window) or 0
        out.append(
            Limit(
                id=b.id,
                unit=b.unit,
                limit=usd_to_nano(b.limit) if b.unit == "usd" else math.floor(b.limit),
                action=b.action,
                match=b.match,
                per=b.per,
                calendar=None if window_s else b.window,
                window_s=window_s,
                # 60 buckets per window: a rolling limit forgets spend within
                # 1/60 of its length of the exact moment.
                bucket_s=max(1, window_s // 60) if window_s else 0,
                alert_at=tuple(sorted(b.alert_at)),
                downgrade_to=b.downgrade_to,
                timezone=b.timezone,
                limit_display=b.limit,
            )
        )
    for r in q.rate_limits:
        for unit, value, suffix in (("requests", r.rpm, "rpm"), ("tokens", r.tpm, "tpm")):
            if value is None:
                continue
            out.append(
                Limit(
                    id=f"{r.id}.{suffix}",
                    unit=unit,  # type: ignore[arg-type]
                    limit=value,
                    action="hard",
                    match=r.match,
                    per=r.per,
                    calendar=None,
                    window_s=60,
                    bucket_s=1,
                    alert_at=(),
                    downgrade_to=None,
                    timezone=None,
                    limit_display=float(value),
                )
            )
    return out


class QuotaPolicy:
    """The quota section compiled against one config: picks the counters a
    subject touches at an instant.  Pure; no I/O."""

    def __init__(self, cfg: NexusConfig, key_prefix: str) -> None:
        self.config = cfg.quotas
        self.keys = QuotaKeys(key_prefix)
        self.limits = _compile(cfg.quotas)
        self._parents: dict[str, str | None] = {o.id: o.parent for o in cfg.orgs}
        self._tz: dict[str, str] = {o.id: o.timezone for o in cfg.orgs}
        self._canonical: dict[str, str] = {}
        self.prices: dict[str, Price | None] = {}
        self.model_provider: dict[str, str] = {}
        self.max_output: dict[str, int] = {}
        for m in cfg.models:
            for n in (m.name, *m.aliases):
                self._canonical[n] = m.name
            self.prices[m.name] = m.price
            self.model_provider[m.name] = m.provider
            self.max_output[m.name] = m.max_output_tokens
        self._applicable: dict[Subject, list[Limit]] = {}
        self._counters: dict[Subject, list[Counter]] = {}
        self._counters_sec = -1
        self.key_subject: dict[str, Subject] = {
            k.id: Subject(org=k.org, project=k.project, key=k.id, user=k.user) for k in cfg.virtual_keys
        }

    def canonical_model(self, name: str) -> str:
        return self._canonical.get(name, name)

    def org_chain(self, org: str) -> tuple[str, ...]:
        return org_chain(self._parents, org)

    def _matches(self, m: Match, s: Subject, chain: tuple[str, ...]) -> bool:
        if m.org is not None and m.org not in chain:
            return False
        return (
            (m.project is None or m.project == s.project)
            and (m.key is None or m.key == s.key)
            and (m.user is None or m.user == s.user)
            and (m.provider is None or m.provider == s.provider)
            and (m.model is None or self.canonical_model(m.model) == s.model)
        )

    def applicable(self, s: Subject) -> list[Limit]:
        hit = self._applicable.get(s)
        if hit is None:
            if len(self._applicable) > 100_000:  # bounded: subjects are keys x models
                self._applicable.clear()
            hit = self._applicable[s] = self._applicable_uncached(s)
        return hit

    def _applicable_uncached(self, s: Subject) -> list[Limit]:
        chain = self.org_chain(s.org) if s.org else ()
        out = []
        for lim in self.limits:
            if not self._matches(lim.match, s, chain):
                continue
            if any(not getattr(s, axis) for axis in lim.per):
                continue  # nothing to attribute a per-axis counter to
            out.append(lim)
        return out

    def _timezone(self, lim: Limit, s: Subject) -> str:
        if lim.timezone:
            return lim.timezone
        if lim.match.org:
            return self._tz.get(lim.match.org, "UTC")
        # A counter split by org, project or key belongs to one org.
        if s.org and any(a in lim.per for a in ("org", "project", "key")):
            return self._tz.get(s.org, "UTC")
        return "UTC"

    def counter(self, lim: Limit, s: Subject, t_ms: int) -> Counter:
        cid = lim.id + "".join(f"|{a}={getattr(s, a)}" for a in lim.per)
        p = self.keys.prefix
        if lim.calendar is not None:
            wid, _start, end = calendar_window(
                lim.calendar, t_ms, self._timezone(lim, s), self.config.week_start
            )
            return Counter(
                limit=lim,
                cid=cid,
                window_id=wid,
                spent_key=f"{p}q:s:{cid}:{wid}",
                held_key=f"{p}q:h:{cid}:{wid}",
                alert_key=f"{p}q:a:{cid}:{wid}",
                rolling=False,
                bucket=0,
                nbuckets=0,
                # Kept a while past the window so /v1/usage and operators can
                # still read the last period.
                expire_at_ms=end + 7 * 86400_000,
                resets_at_ms=end,
            )
        bucket_ms = lim.bucket_s * 1000
        bucket = t_ms // bucket_ms
        nbuckets = lim.window_s // lim.bucket_s
        epoch = t_ms // (lim.window_s * 1000)
        return Counter(
            limit=lim,
            cid=cid,
            window_id=f"r{epoch}",
            spent_key=f"{p}q:r:{cid}",
            held_key=f"{p}q:h:{cid}:r",
            alert_key=f"{p}q:a:{cid}:r{epoch}",
            rolling=True,
            bucket=bucket,
            nbuckets=nbuckets,
            expire_at_ms=(bucket + 2 * nbuckets) * bucket_ms,
            resets_at_ms=(bucket + 1) * bucket_ms,
        )

    def counters(self, s: Subject, t_ms: int) -> list[Counter]:
        # Every window and bucket boundary is on a whole second (buckets are
        # whole seconds, zone offsets whole minutes), so a subject's counters
        # are the same all through one second: cache them for it.
        sec = t_ms // 1000
        if sec != self._counters_sec:
            self._counters_sec = sec
            self._counters.clear()
        hit = self._counters.get(s)
        if hit is None:
            hit = self._counters[s] = [self.counter(lim, s, sec * 1000) for lim in self.applicable(s)]
        return hit


# --- the rolling-window counter, shared by the reserve and settle scripts ----

# A rolling counter is a hash: field "<bucket index>" -> amount, "sum" the
# total of the live buckets, "lo" the oldest live bucket.  Advancing the
# window subtracts the buckets that left it, so a read is O(buckets left)
# rather than O(window).
ROLLING_LUA = r"""
local function rolling_advance(key, bucket, n)
  -- Returns the live sum and the oldest live bucket.
  local floor = bucket - n + 1
  local lo = tonumber(redis.call('HGET', key, 'lo'))
  if lo == nil then
    redis.call('HSET', key, 'lo', floor, 'sum', 0)
    return 0, floor
  end
  local sum = tonumber(redis.call('HGET', key, 'sum')) or 0
  if floor <= lo then return sum, lo end
  if floor - lo > n then
    sum = 0
    local fields = redis.call('HKEYS', key)
    for _, f in ipairs(fields) do
      local idx = tonumber(f)
      if idx ~= nil then
        if idx < floor then redis.call('HDEL', key, f)
        else sum = sum + tonumber(redis.call('HGET', key, f)) end
      end
    end
  else
    for idx = lo, floor - 1 do
      local v = redis.call('HGET', key, idx)
      if v then
        sum = sum - tonumber(v)
        redis.call('HDEL', key, idx)
      end
    end
  end
  redis.call('HSET', key, 'lo', floor, 'sum', sum)
  return sum, floor
end
"""
