"""Delivering one alert to one channel: the rate limit, then attempts with
exponential backoff (and a little jitter, so channels that failed together
do not retry in step), and the outcome as an ``alert.delivery`` event for
the delivery log."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

from prometheus_client import Counter

from processors.alerts.channels import ChannelClient, Outcome
from processors.alerts.ratelimit import TokenBucket
from streams.events import Node
from streams.events_alerts import AlertDelivery, AlertRaised

log = logging.getLogger("nexus.alerts")

DELIVERIES = Counter(
    "nexus_alert_deliveries_total",
    "Alert notifications by channel and outcome (delivered, failed, rate_limited)",
    ["channel", "outcome"],
)

Sleep = Callable[[float], Awaitable[None]]


def kind_of(channel: object) -> str:
    return str(type(channel).__struct_config__.tag)  # type: ignore[attr-defined]


def backoff_s(attempt: int, initial_s: float, max_s: float) -> float:
    """The pause after failed attempt ``attempt`` (1-based), before jitter."""
    return float(min(max_s, initial_s * 2 ** (attempt - 1)))


async def deliver(
    alert: AlertRaised,
    client: ChannelClient,
    bucket: TokenBucket,
    *,
    node: Node,
    sleep: Sleep = asyncio.sleep,
) -> AlertDelivery:
    c = client.config
    started = time.monotonic()

    def record(outcome: str, attempts: int, result: Outcome | None) -> AlertDelivery:
        DELIVERIES.labels(c.name, outcome).inc()
        return AlertDelivery(
            alert_id=alert.id,
            rule=alert.rule,
            channel=c.name,
            channel_kind=kind_of(c),
            outcome=outcome,
            attempts=attempts,
            status_code=result.status_code if result else 0,
            reason=result.reason if result and not result.ok else ("" if result else "rate limit reached"),
            elapsed_ms=round((time.monotonic() - started) * 1000, 1),
            node=node,
            tenant=alert.tenant,
        )

    if not bucket.take():
        log.warning(
            "alerts: channel %s is over its rate (%g a minute); alert %s not sent",
            c.name,
            bucket.capacity,
            alert.id,
        )
        return record("rate_limited", 0, None)
    result: Outcome | None = None
    for attempt in range(1, c.max_attempts + 1):
        try:
            result = await client.send(alert)
        except Exception as exc:  # a client bug must not lose the record of the attempt
            log.exception("alerts: channel %s raised", c.name)
            result = Outcome(False, reason=f"internal error: {type(exc).__name__}")
        if result.ok:
            return record("delivered", attempt, result)
        if not result.retry or attempt == c.max_attempts:
            break
        pause = backoff_s(attempt, c.backoff_initial_s, c.backoff_max_s)
        await sleep(pause * random.uniform(0.9, 1.1))
    assert result is not None
    log.warning(
        "alerts: delivery of %s to %s failed after %d attempt(s): %s",
        alert.id,
        c.name,
        attempt,
        result.reason,
    )
    return record("failed", attempt, result)
