"""The generic webhook: the alert as JSON, signed.

    POST <url>
    Content-Type: application/json
    X-Nexus-Alert-Id: <alert id>          (also "id" in the body: deduplicate by it)
    X-Nexus-Timestamp: <unix seconds>
    X-Nexus-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>

A receiver recomputes the HMAC over the timestamp, a dot and the raw body,
compares in constant time, and refuses a timestamp more than five minutes
from its clock (a captured request cannot be replayed later); see
docs/alerts.md for the recipe.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

import msgspec

from processors.alerts.channels.base import Outcome, iso_time
from processors.alerts.channels.http import Poster
from streams.config_alerts import WebhookChannel
from streams.events_alerts import AlertRaised

SIGNATURE_HEADER = "X-Nexus-Signature"
TIMESTAMP_HEADER = "X-Nexus-Timestamp"
ID_HEADER = "X-Nexus-Alert-Id"
# What the recipe in docs/alerts.md tells receivers to allow.
REPLAY_WINDOW_S = 300

_encode = msgspec.json.Encoder().encode


def body(alert: AlertRaised) -> bytes:
    doc: dict[str, Any] = {
        "id": alert.id,
        "type": "nexus.alert",
        "status": alert.status,
        "severity": alert.severity,
        "rule": alert.rule,
        "rule_kind": alert.rule_kind,
        "subject": alert.subject,
        "dedup_key": alert.dedup_key,
        "title": alert.title,
        "summary": alert.summary,
        "details": alert.details,
        "suppressed": alert.suppressed,
        "occurred_at": iso_time(alert.occurred_at_ms),
        "source_event_id": alert.source_event_id,
    }
    return _encode(doc)


def sign(secret: bytes, timestamp: int, payload: bytes) -> str:
    mac = hmac.new(secret, str(timestamp).encode() + b"." + payload, hashlib.sha256)
    return "v1=" + mac.hexdigest()


class WebhookClient:
    def __init__(
        self,
        config: WebhookChannel,
        *,
        url: str,
        secret: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._url = url
        self._secret = secret.encode()
        self._clock = clock
        self._poster = Poster(timeout_s=config.timeout_s, allow_private=config.allow_private_network)

    async def send(self, alert: AlertRaised) -> Outcome:
        payload = body(alert)
        ts = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "nexus-alerts",
            ID_HEADER: alert.id,
            TIMESTAMP_HEADER: str(ts),
            SIGNATURE_HEADER: sign(self._secret, ts, payload),
        }
        return await self._poster.post(self._url, payload, headers)

    async def close(self) -> None:
        await self._poster.close()
