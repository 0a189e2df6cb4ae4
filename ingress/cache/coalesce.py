"""Request coalescing: while one request with a key is in flight, identical
requests join it instead of calling the provider.  The leader's bytes (its
JSON answer, or its stream as it is written) fan out to every joiner, in
order, so a joiner's stream starts as soon as the leader's does.

In-process: each gateway node coalesces its own traffic (no cross-node
lock on the hot path); the exact cache shares answers across nodes."""

from __future__ import annotations

import asyncio


class Flight:
    """One in-flight leader: the bytes written so far, and whether it ended
    well (``ok``), badly (a joiner then makes its own call if nothing was
    written yet) or is still going."""

    __slots__ = ("chunks", "content_type", "done", "kind", "ok", "waiters")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.kind = ""  # "response" | "stream", set when the leader answers
        self.content_type = ""
        self.done = False
        self.ok = False
        self.waiters: set[asyncio.Event] = set()

    def _wake(self) -> None:
        for w in self.waiters:
            w.set()

    def begin(self, kind: str, content_type: str) -> None:
        self.kind, self.content_type = kind, content_type
        self._wake()

    def push(self, data: bytes) -> None:
        self.chunks.append(data)
        self._wake()

    def finish(self, ok: bool) -> None:
        self.done, self.ok = True, ok
        self._wake()

    async def follow(self) -> asyncio.Event:
        ev = asyncio.Event()
        self.waiters.add(ev)
        return ev

    def leave(self, ev: asyncio.Event) -> None:
        self.waiters.discard(ev)


class Coalescer:
    def __init__(self) -> None:
        self._flights: dict[str, Flight] = {}

    def join_or_lead(self, key: str) -> tuple[Flight, bool]:
        """(flight, leader?)"""
        flight = self._flights.get(key)
        if flight is not None:
            return flight, False
        flight = self._flights[key] = Flight()
        return flight, True

    def land(self, key: str, flight: Flight) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    def __len__(self) -> int:
        return len(self._flights)
