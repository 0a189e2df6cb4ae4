"""The time-to-first-token bound of a stream, and the start of its answer.

With a provider's ``ttft_timeout_s`` set, a stream's answer to the caller
(its headers included) is held back until the first token arrives: what
comes before it (a role chunk, keep-alives) waits in memory.  Should the
bound fire first, the caller has received nothing, so the attempt fails as
a timeout and failover may try the next target.  Once the first token is
through, only the attempt's total deadline bounds the stream (and the
provider's read timeout, the longest silence between two reads).  Without
a TTFT bound nothing is held: the answer starts at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from adapters.canonical import CanonicalError
from ingress.pipeline.exchange import BodyWriter, Exchange, start_stream

TTFT_TIMED_OUT = CanonicalError(
    code="timeout", message="The provider sent no first token in time.", status=504
)


class FirstToken:
    __slots__ = ("deadline", "ex", "first_deadline", "held", "holding", "timer", "writer")

    def __init__(self, ex: Exchange, deadline: float, ttft_s: float | None, sent: float) -> None:
        """``deadline`` and ``sent`` on the event loop's clock."""
        self.ex = ex
        self.deadline = deadline
        self.holding = ttft_s is not None
        self.first_deadline = min(deadline, sent + ttft_s) if ttft_s is not None else deadline
        self.held: list[bytes] = []
        self.writer: BodyWriter | None = None
        self.timer: asyncio.Timeout | None = None

    @contextlib.asynccontextmanager
    async def bounded(self) -> AsyncIterator[None]:
        """Read the stream under this: the TTFT bound until the first
        token, then the total deadline."""
        async with asyncio.timeout_at(self.first_deadline) as timer:
            self.timer = timer
            try:
                yield
            finally:
                self.timer = None

    def silent_timeout(self, failure: object) -> bool:
        """Whether ``failure`` is the TTFT bound firing before anything
        reached the caller (so the attempt may be failed over)."""
        return self.holding and failure is TTFT_TIMED_OUT

    async def write(self, data: bytes, token: bool) -> None:
        if self.holding and not token:
            self.held.append(data)
            return
        await self.release()
        assert self.writer is not None
        await self.writer.write(data)

    async def release(self) -> None:
        """Stop holding: start the answer, send what was held."""
        if self.holding:
            self.holding = False
            if self.timer is not None:
                self.timer.reschedule(self.deadline)
        if self.writer is None:
            self.writer = await start_stream(self.ex)
        if self.held:
            data = b"".join(self.held)
            self.held.clear()
            await self.writer.write(data)

    async def end(self) -> None:
        await self.release()
        assert self.writer is not None
        await self.writer.end()
