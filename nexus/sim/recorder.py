"""What reached the simulated provider, so a test can check exactly what a
gateway forwarded: a count and the last N requests (bodies as parsed JSON,
the Authorization header reduced to whether it matched)."""

from __future__ import annotations

import collections
from typing import Any

import msgspec


class Recorded(msgspec.Struct):
    method: str
    path: str
    body: Any
    headers: dict[str, str]


# Headers a test may want to see; anything else (and every credential) is
# left out of the record.
_KEPT_HEADERS = ("content-type", "user-agent", "x-request-id", "x-nexus-request-id")


class Recorder:
    def __init__(self, limit: int) -> None:
        self.count = 0
        self._last: collections.deque[Recorded] = collections.deque(maxlen=max(limit, 1))

    def record(self, method: str, path: str, body: Any, headers: dict[str, str]) -> None:
        self.count += 1
        kept = {k: v for k, v in headers.items() if k in _KEPT_HEADERS or k.startswith("x-sim-")}
        self._last.append(Recorded(method=method, path=path, body=body, headers=kept))

    def reset(self) -> None:
        self.count = 0
        self._last.clear()

    def snapshot(self) -> dict[str, Any]:
        return {"count": self.count, "requests": list(self._last)}
