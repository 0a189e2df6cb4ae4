"""Slack incoming webhooks: ``text`` (what notifications and clients
without blocks show) plus Block Kit blocks (a header, the summary, the
details as fields, a context line)."""

from __future__ import annotations

from typing import Any

import msgspec

from processors.alerts.channels.base import Outcome, iso_time
from processors.alerts.channels.http import Poster
from streams.config_alerts import SlackChannel
from streams.events_alerts import AlertRaised

_encode = msgspec.json.Encoder().encode
_MARK = {
    "critical": ":red_circle:",
    "error": ":large_orange_circle:",
    "warning": ":warning:",
    "info": ":information_source:",
}
# Slack's limits: a header 150 characters, a section 3000, 10 fields.
_HEADER_MAX = 150
_TEXT_MAX = 3000
_FIELDS_MAX = 10


def _escape(text: str) -> str:
    # Slack's mrkdwn control characters.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def body(alert: AlertRaised) -> bytes:
    resolved = alert.status == "resolved"
    mark = ":white_check_mark:" if resolved else _MARK.get(alert.severity, ":warning:")
    state = "RESOLVED" if resolved else alert.severity.upper()
    headline = f"{mark} [{state}] {alert.title}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": headline[:_HEADER_MAX], "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _escape(alert.summary)[:_TEXT_MAX] or " "}},
    ]
    fields = [
        {"type": "mrkdwn", "text": f"*{_escape(k)}*\n{_escape(v)}"[:2000]}
        for k, v in list(alert.details.items())[:_FIELDS_MAX]
    ]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    context = f"rule `{_escape(alert.rule)}` · {_escape(alert.subject)} · {iso_time(alert.occurred_at_ms)}"
    if alert.suppressed:
        context += f" · {alert.suppressed} similar suppressed"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context[:_TEXT_MAX]}]})
    return _encode({"text": f"{headline}: {alert.summary}"[:_TEXT_MAX], "blocks": blocks})


class SlackClient:
    def __init__(self, config: SlackChannel, *, url: str) -> None:
        self.config = config
        self._url = url
        self._poster = Poster(timeout_s=config.timeout_s, allow_private=config.allow_private_network)

    async def send(self, alert: AlertRaised) -> Outcome:
        headers = {"Content-Type": "application/json", "User-Agent": "nexus-alerts"}
        return await self._poster.post(self._url, body(alert), headers)

    async def close(self) -> None:
        await self._poster.close()
