"""What reached the simulated provider, so a test can check exactly what a
gateway forwarded: a count and the last N requests (bodies as parsed JSON;
the credential presented only as a fingerprint, ``credential_fingerprint``)."""

from __future__ import annotations

import collections
import hashlib
from typing import Any

import msgspec


class Recorded(msgspec.Struct):
    method: str
    path: str
    body: Any
    headers: dict[str, str]
    credential: str = ""  # fingerprint of the credential presented ("" = none)


# Headers a test may want to see; anything else (and every credential) is
# left out of the record.
_KEPT_HEADERS = ("content-type", "user-agent", "x-request-id", "x-nexus-request-id")
_CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")


def presented_credential(headers: dict[str, str]) -> str:
    for name in _CREDENTIAL_HEADERS:
        value = headers.get(name)
        if value:
            return value.removeprefix("Bearer ").strip()
    return ""


def credential_fingerprint(secret: str) -> str:
    """What the record shows of a credential: enough to tell keys apart."""
    return hashlib.sha256(secret.encode()).hexdigest()[:12] if secret else ""


class Recorder:
    def __init__(self, limit: int) -> None:
        self.count = 0
        self._last: collections.deque[Recorded] = collections.deque(maxlen=max(limit, 1))

    def record(self, method: str, path: str, body: Any, headers: dict[str, str]) -> None:
        self.count += 1
        lower = {k.lower(): v for k, v in headers.items()}
        kept = {k: v for k, v in lower.items() if k in _KEPT_HEADERS or k.startswith("x-sim-")}
        credential = credential_fingerprint(presented_credential(lower))
        self._last.append(Recorded(method=method, path=path, body=body, headers=kept, credential=credential))

    def reset(self) -> None:
        self.count = 0
        self._last.clear()

    def snapshot(self) -> dict[str, Any]:
        return {"count": self.count, "requests": list(self._last)}
