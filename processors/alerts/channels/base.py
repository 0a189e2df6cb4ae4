"""What every channel client is: it sends one alert and says what
happened, in our words (never the receiver's body)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

from streams.config_alerts import Channel
from streams.events_alerts import AlertRaised


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    status_code: int = 0  # HTTP status or SMTP reply code; 0 when none
    reason: str = ""
    # Worth another attempt (connection error, timeout, 5xx, 429, SMTP 4xx);
    # false for an answer that will not change (a 4xx, SMTP 5xx).
    retry: bool = False


class ChannelClient(Protocol):
    @property
    def config(self) -> Channel: ...

    async def send(self, alert: AlertRaised) -> Outcome: ...

    async def close(self) -> None: ...


def iso_time(ms: int) -> str:
    return (
        dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )
