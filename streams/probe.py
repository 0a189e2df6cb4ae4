"""The contract between the Hub and the provider probe: the Hub asks
whether a provider answers with a credential and which models it offers;
the probe (``ingress.probe``, through the gateway's own codecs and SSRF
guard) answers.  The composition root hands the Hub a ``Prober``: the Hub
itself never imports the data plane.

An answer never holds the secret, nor the provider's error message
(providers quote part of a rejected key): a status, a canonical error code
and a reason of our own.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from streams.config import Provider


class ProbeResult(msgspec.Struct, kw_only=True):
    ok: bool
    # What the provider was asked: "models" (its listing) or "chat" (a
    # one-token call, where it has no listing).
    method: str
    status: int = 0  # the provider's HTTP status (0: no answer)
    latency_ms: float = 0.0
    models: list[str] = []  # "models" only
    error: str = ""  # a canonical code: auth_failed, rate_limited, timeout, refused, unreachable...
    reason: str = ""  # our own words


class Prober(Protocol):
    async def __call__(
        self, provider: Provider, api_key: str | None, *, model: str = "", timeout_s: float = 10.0
    ) -> ProbeResult: ...
