"""What GET /v1/usage returns for the calling key: spend and remaining on
every budget and rate limit that applies to it, read from the counters."""

from __future__ import annotations

import msgspec

from ingress.quota.gate import QuotaGate
from streams.quota_counters import NANO, Counter, Subject


class LimitUsage(msgspec.Struct, frozen=True):
    id: str
    counter_id: str
    unit: str  # usd | tokens | requests
    action: str  # hard | soft | downgrade | track
    window: str  # day | week | month | a rolling duration (60s for rate limits)
    window_id: str
    limit: float
    spent: float  # settled usage
    reserved: float  # held by requests in flight
    remaining: float
    resets_at: int  # unix seconds; rolling: when the oldest bucket drops out
    model: str | None = None  # set when the counter is per model / for one model
    provider: str | None = None


class KeyUsage(msgspec.Struct, frozen=True):
    key_id: str
    org: str
    project: str
    limits: list[LimitUsage]


async def key_usage(gate: QuotaGate, key_id: str, *, now_ms: int | None = None) -> KeyUsage | None:
    """None for an unknown key.  Budgets on a model or provider axis are
    listed once per configured model they apply to."""
    policy = gate.policy
    base = policy.key_subject.get(key_id)
    if base is None:
        return None
    now = gate.clock() if now_ms is None else now_ms
    seen: set[str] = set()
    found: list[tuple[Counter, Subject]] = []
    subjects = [base] + [
        msgspec.structs.replace(base, model=m, provider=p) for m, p in sorted(policy.model_provider.items())
    ]
    for s in subjects:
        for c in policy.counters(s, now):
            if c.spent_key in seen:
                continue
            seen.add(c.spent_key)
            found.append((c, s))
    values = await gate.peek([c for c, _ in found], now)
    limits = []
    for (c, s), (spent, held) in zip(found, values, strict=True):
        lim = c.limit
        scale = NANO if lim.unit == "usd" else 1
        axis_model = lim.match.model is not None or "model" in lim.per
        axis_provider = lim.match.provider is not None or "provider" in lim.per
        limits.append(
            LimitUsage(
                id=lim.id,
                counter_id=c.cid,
                unit=lim.unit,
                action=lim.action,
                window=lim.calendar or f"{lim.window_s}s",
                window_id=c.window_id,
                limit=lim.limit_display,
                spent=spent / scale,
                reserved=held / scale,
                remaining=max(0, lim.limit - spent - held) / scale,
                resets_at=c.resets_at_ms // 1000,
                model=s.model if axis_model else None,
                provider=s.provider if axis_provider else None,
            )
        )
    return KeyUsage(key_id=key_id, org=base.org, project=base.project, limits=limits)
