"""The ``quotas:`` config section (budgets and rate limits), strictly
validated.  What the section compiles to (the counters a request touches,
their Valkey layout) is ``streams.quota_counters``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Set
from typing import Literal

from streams.config_base import ConfigError, Strict
from streams.config_checks import check_time_zone

Axis = Literal["org", "project", "key", "user", "provider", "model"]
AXES: tuple[Axis, ...] = ("org", "project", "key", "user", "provider", "model")
Unit = Literal["usd", "tokens", "requests"]
Action = Literal["hard", "soft", "downgrade", "track"]


class Match(Strict, frozen=True):
    """Which requests a limit applies to: every field given must match.
    ``org`` matches the org itself and every org below it (parent chain)."""

    org: str | None = None
    project: str | None = None
    key: str | None = None
    user: str | None = None
    provider: str | None = None
    model: str | None = None


class Budget(Strict, frozen=True):
    id: str
    unit: Literal["usd", "tokens"]
    limit: float
    # day | week | month (calendar, in the org's time zone) or a rolling
    # duration such as 1h, 24h, 30m, 7d.
    window: str
    match: Match = Match()
    # One counter per distinct value of these axes (e.g. per: [key] gives
    # every key its own budget); empty means one shared counter.
    per: tuple[Axis, ...] = ()
    action: Action = "hard"
    # Fractions of the limit; crossing each emits one QuotaAlert per window.
    alert_at: tuple[float, ...] = ()
    downgrade_to: str | None = None
    timezone: str | None = None  # default: the matched (or the request's) org's


class RateLimit(Strict, frozen=True):
    id: str
    match: Match = Match()
    per: tuple[Axis, ...] = ("key",)
    rpm: int | None = None
    tpm: int | None = None


class StoreBreaker(Strict, frozen=True):
    failures: int = 5  # failed or timed-out calls within window_s open the breaker
    window_s: float = 10.0
    open_s: float = 5.0  # then one call probes the store again


class QuotaStore(Strict, frozen=True):
    """How the gateway treats the quota store (Valkey) when it does not answer."""

    # How long the store may leave reservation calls without a byte of
    # answer before it is judged hung (a stopped server, a black-holed
    # network) and the calls waiting on it are answered at once.  It
    # answers in well under a millisecond when healthy.
    timeout_ms: float = 250.0
    # When the store cannot answer (down, hung, or its breaker open):
    # "closed" refuses the requests a limit applies to with 503
    # quota_store_unavailable; "open" serves them without a reservation
    # (their usage events still settle spend, but a hard cap can be
    # overshot while the store is away).
    fail: Literal["closed", "open"] = "closed"
    # After this many failures the store is not asked at all (each request
    # is answered at once) until open_s has passed and one call succeeds.
    breaker: StoreBreaker = StoreBreaker()


class QuotaConfig(Strict, frozen=True):
    budgets: tuple[Budget, ...] = ()
    rate_limits: tuple[RateLimit, ...] = ()
    # A reservation not settled by then belongs to a crashed request and is
    # released; keep it above the longest request (gateway.request_timeout_s).
    reservation_ttl_s: float = 900.0
    # Output tokens reserved when a request names no max_tokens and the
    # model declares no max_output_tokens.
    default_max_tokens: int = 4096
    week_start: Literal["monday", "sunday"] = "monday"
    store: QuotaStore = QuotaStore()


# --- validation --------------------------------------------------------------

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DURATION = re.compile(r"^([1-9][0-9]*)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
CALENDAR = ("day", "week", "month")


def rolling_seconds(window: str) -> int | None:
    """Seconds of a rolling window, None for a calendar window."""
    if window in CALENDAR:
        return None
    m = _DURATION.match(window)
    if m is None:
        raise ValueError(window)
    return int(m.group(1)) * _UNIT_S[m.group(2)]


def validate_quotas(q: QuotaConfig, *, known: Mapping[str, Set[str]]) -> None:
    """Raise ConfigError naming the first bad field.  ``known`` holds the
    names a match may use per axis (org, project, key, provider, model: the
    public names and aliases); an axis it lacks (user) takes any value."""
    models = known.get("model", frozenset())

    def check_match(match: Match, per: tuple[Axis, ...], where: str) -> None:
        for axis in AXES:
            value = getattr(match, axis)
            if value is not None and axis in known and value not in known[axis]:
                raise ConfigError(f"{where}.match.{axis}: unknown {axis} {value!r}")
        if len(set(per)) != len(per):
            raise ConfigError(f"{where}.per: an axis is listed twice")

    st = q.store
    if not 0 < st.timeout_ms <= 60_000:
        raise ConfigError("quotas.store.timeout_ms: must be in (0, 60000]")
    if st.breaker.failures < 1 or st.breaker.window_s <= 0 or st.breaker.open_s <= 0:
        raise ConfigError("quotas.store.breaker: failures >= 1, window_s and open_s > 0")

    ids: set[str] = set()
    for i, b in enumerate(q.budgets):
        where = f"quotas.budgets[{i}]"
        if not _ID.match(b.id):
            raise ConfigError(f"{where}.id: {b.id!r} is not a valid id (letters, digits, . _ -)")
        if b.id in ids:
            raise ConfigError(f"{where}.id: duplicate quota id {b.id!r}")
        ids.add(b.id)
        check_match(b.match, b.per, where)
        if not (b.limit > 0 and math.isfinite(b.limit)):
            raise ConfigError(f"{where}.limit: must be a positive number")
        try:
            rolling_seconds(b.window)
        except ValueError:
            raise ConfigError(
                f"{where}.window: {b.window!r} is not day, week, month or a duration like 1h, 24h, 30m"
            ) from None
        for t in b.alert_at:
            if not 0 < t <= 10:
                raise ConfigError(f"{where}.alert_at: {t} is not a fraction of the limit in (0, 10]")
        if b.action == "downgrade":
            if b.downgrade_to is None:
                raise ConfigError(f"{where}.downgrade_to: required when action is downgrade")
            if b.downgrade_to not in models:
                raise ConfigError(f"{where}.downgrade_to: unknown model {b.downgrade_to!r}")
        elif b.downgrade_to is not None:
            raise ConfigError(f"{where}.downgrade_to: only allowed when action is downgrade")
        if b.timezone is not None:
            check_time_zone(b.timezone, f"{where}.timezone")
    for i, r in enumerate(q.rate_limits):
        where = f"quotas.rate_limits[{i}]"
        if not _ID.match(r.id):
            raise ConfigError(f"{where}.id: {r.id!r} is not a valid id (letters, digits, . _ -)")
        if r.id in ids:
            raise ConfigError(f"{where}.id: duplicate quota id {r.id!r}")
        ids.add(r.id)
        check_match(r.match, r.per, where)
        if r.rpm is None and r.tpm is None:
            raise ConfigError(f"{where}: set rpm, tpm or both")
        for name in ("rpm", "tpm"):
            v = getattr(r, name)
            if v is not None and v <= 0:
                raise ConfigError(f"{where}.{name}: must be positive")
    if q.reservation_ttl_s <= 0:
        raise ConfigError("quotas.reservation_ttl_s: must be positive")
    if q.default_max_tokens <= 0:
        raise ConfigError("quotas.default_max_tokens: must be positive")
