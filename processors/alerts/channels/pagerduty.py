"""PagerDuty Events API v2 (``POST /v2/enqueue``): ``trigger`` while the
condition holds, ``resolve`` when it ends, both under one ``dedup_key`` per
rule and subject so PagerDuty folds them into one incident."""

from __future__ import annotations

from typing import Any

import msgspec

from processors.alerts.channels.base import Outcome, iso_time
from processors.alerts.channels.http import Poster
from streams.config_alerts import PagerDutyChannel
from streams.events_alerts import AlertRaised

_encode = msgspec.json.Encoder().encode
_SUMMARY_MAX = 1024  # PagerDuty truncates longer summaries


def incident_key(alert: AlertRaised) -> str:
    return f"nexus:{alert.rule}:{alert.subject}"[:255]


def body(alert: AlertRaised, routing_key: str) -> bytes:
    doc: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "resolve" if alert.status == "resolved" else "trigger",
        "dedup_key": incident_key(alert),
    }
    if alert.status != "resolved":
        doc["client"] = "Nexus"
        doc["payload"] = {
            "summary": f"{alert.title}: {alert.summary}"[:_SUMMARY_MAX],
            "source": alert.node.id if alert.node.kind != "unknown" else "nexus",
            "severity": alert.severity,  # critical | error | warning | info, PagerDuty's own four
            "timestamp": iso_time(alert.occurred_at_ms),
            "component": alert.subject,
            "group": alert.rule,
            "class": alert.rule_kind,
            "custom_details": {**alert.details, "alert_id": alert.id, "suppressed": alert.suppressed},
        }
    return _encode(doc)


class PagerDutyClient:
    def __init__(self, config: PagerDutyChannel, *, url: str, routing_key: str) -> None:
        self.config = config
        self._url = url
        self._routing_key = routing_key
        self._poster = Poster(timeout_s=config.timeout_s, allow_private=config.allow_private_network)

    async def send(self, alert: AlertRaised) -> Outcome:
        headers = {"Content-Type": "application/json", "User-Agent": "nexus-alerts"}
        return await self._poster.post(self._url, body(alert, self._routing_key), headers)

    async def close(self) -> None:
        await self._poster.close()
