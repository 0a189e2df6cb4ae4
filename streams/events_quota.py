"""Events the quota processor emits."""

from __future__ import annotations

from streams.events import Event


class QuotaAlert(Event, tag="quota.alert"):
    """Settled spend on one counter crossed an alert threshold.  Exactly one
    per (counter, window, threshold): the processor marks the crossing in
    Valkey atomically with the spend, and publishes with ``alert_key`` as the
    Nats-Msg-Id, so a crash between the two cannot send it twice."""

    alert_key: str = ""
    budget_id: str = ""
    counter_id: str = ""  # budget id plus its per-axis values, e.g. "team|key=k1"
    window_id: str = ""  # d2026-11-24, w2026-11-23, m2026-11 or r<epoch> (rolling)
    unit: str = ""  # usd | tokens | requests
    action: str = ""  # the budget's action: hard | soft | downgrade | track
    threshold: float = 0.0  # fraction of the limit
    limit: float = 0.0  # in the unit (USD, tokens)
    spent: float = 0.0  # settled spend when the threshold was crossed
