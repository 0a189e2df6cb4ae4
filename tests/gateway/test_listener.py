"""The gateway's listener accepts every pending connection on one readiness
(uvloop's own accept takes one per loop iteration: on a saturated loop,
connections then wait in the kernel for seconds, unseen by admission)."""

from __future__ import annotations

import asyncio
import socket
import time

import uvloop

from ingress.gateway.listener import Listener


class Counting(asyncio.Protocol):
    made = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        Counting.made += 1


def _connect(port: int, n: int) -> list[socket.socket]:
    # Blocking connects: the kernel completes them into the accept queue,
    # whatever the loop is doing.
    return [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]


async def test_one_readiness_accepts_every_pending_connection() -> None:
    Counting.made = 0
    listener = Listener("127.0.0.1", 0, Counting)
    socks = _connect(listener.port, 50)
    try:
        listener._accept()  # one readiness, before the loop runs anything
        assert len(listener._tasks) == 50
        for _ in range(200):
            if Counting.made == 50:
                break
            await asyncio.sleep(0.01)
        assert Counting.made == 50
    finally:
        listener.close()
        for s in socks:
            s.close()


def test_a_saturated_uvloop_still_accepts_a_burst_at_once() -> None:
    """Under uvloop, with every loop iteration held 100 ms: 60 new
    connections would take 6 s at one accept per iteration."""

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        Counting.made = 0
        listener = Listener("127.0.0.1", 0, Counting)
        on = True

        def hog() -> None:
            if on:
                time.sleep(0.1)
                loop.call_soon(hog)

        loop.call_soon(hog)
        try:
            t0 = time.monotonic()
            socks = await loop.run_in_executor(None, _connect, listener.port, 60)
            while Counting.made < 60 and time.monotonic() - t0 < 30:
                await asyncio.sleep(0.01)
            elapsed = time.monotonic() - t0
            assert Counting.made == 60
            for s in socks:
                s.close()
            return elapsed
        finally:
            on = False
            listener.close()

    elapsed = uvloop.run(scenario())
    assert elapsed < 3.0, elapsed
