"""Byte-for-byte relaying between two streams (spliced tunnels, WebSocket
upgrades), with an idle limit: the tunnel ends when neither side has sent
a byte for ``idle_s``.

The relay works on the transports, not the streams: each side's transport
gets a small protocol that writes what it receives straight to the other
side's transport, and pauses reading on one side while the other side's
write buffer is full.  Through ``StreamReader.read`` every chunk was copied
into the reader's buffer, copied out again and cost two task switches per
direction; a 100 MB spliced download ran at ~0.72 of a direct one.

``open_tunnel`` starts the relay and returns at once, calling back when it
ends: a spliced CONNECT tunnel then holds no task, no coroutine frames and
none of the http1 connection's objects while it is idle -- two protocol
objects, the counts and one timer (1,000 idle tunnels cost ~17 MB of
Python objects when the accepting task waited on them).  ``splice`` is the
same relay awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

CHUNK = 256 * 1024


class Counts:
    __slots__ = ("down", "last", "up")

    def __init__(self) -> None:
        self.up = 0
        self.down = 0
        self.last = time.monotonic()


class _End(asyncio.Protocol):
    """One side of the tunnel: what its transport receives goes to the
    other side's transport."""

    __slots__ = ("eof", "over_tls", "peer", "transport", "tunnel", "up", "writer")

    def __init__(self, tunnel: Tunnel, writer: asyncio.StreamWriter, up: bool) -> None:
        self.tunnel = tunnel
        # Held while the relay runs: a StreamWriter closes its transport
        # when it is collected.  Its stream protocol and reader are let go
        # (the transport has a new protocol): ~2 kB a side.
        self.writer = writer
        state: dict[str, Any] = vars(writer)
        state["_protocol"] = state["_reader"] = None
        self.transport: Any = writer.transport  # uvloop's transports are not asyncio.Transport subclasses
        # A TLS transport cannot stay half-open (and warns when asked to).
        self.over_tls = self.transport.get_extra_info("sslcontext") is not None
        self.up = up  # what this side receives goes a -> b
        self.eof = False
        self.peer: _End | None = None

    def data_received(self, data: bytes) -> None:
        counts = self.tunnel.counts
        counts.last = time.monotonic()
        if self.up:
            counts.up += len(data)
        else:
            counts.down += len(data)
        peer = self.peer
        assert peer is not None
        if not peer.transport.is_closing():
            peer.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        assert peer is not None
        # Half-close: the other side may still answer.
        if peer.transport.can_write_eof() and not peer.transport.is_closing():
            with contextlib.suppress(OSError, RuntimeError):
                peer.transport.write_eof()
        self.tunnel.check()
        return not self.over_tls  # keep this side open for writing

    def connection_lost(self, exc: Exception | None) -> None:
        self.tunnel.close()

    # Flow control: this side's write buffer is full, so stop reading what
    # fills it.
    def pause_writing(self) -> None:
        assert self.peer is not None
        if not self.peer.transport.is_closing():
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.peer is not None
        if not self.peer.transport.is_closing():
            self.peer.transport.resume_reading()


class Tunnel:
    """A relay in progress; ``close`` ends it (both connections close after
    sending what they still buffer) and calls ``on_done`` once."""

    __slots__ = ("a", "b", "counts", "finished", "idle_s", "loop", "on_done", "timer")

    def __init__(self, counts: Counts, idle_s: float, on_done: Callable[[Tunnel], None]) -> None:
        self.loop = asyncio.get_running_loop()
        self.counts = counts
        self.idle_s = idle_s
        self.on_done: Callable[[Tunnel], None] | None = on_done
        self.timer: asyncio.TimerHandle | None = None
        self.finished = False
        self.a: _End | None = None
        self.b: _End | None = None

    def _arm(self) -> None:
        # One timer per tunnel, moved only when it fires (not per chunk).
        self.timer = self.loop.call_at(self.loop.time() + self.idle_s, self._idle)

    def _idle(self) -> None:
        quiet = time.monotonic() - self.counts.last
        if quiet >= self.idle_s:
            self.close()
        else:
            self.timer = self.loop.call_at(self.loop.time() + self.idle_s - quiet, self._idle)

    def check(self) -> None:
        """Both directions ended: the tunnel is done."""
        if self.a is not None and self.b is not None and self.a.eof and self.b.eof:
            self.close()

    def close(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for end in (self.a, self.b):
            if end is not None:
                # close() sends what is still buffered first.
                end.transport.close()
        done, self.on_done = self.on_done, None
        if done is not None:
            done(self)


def _take(reader: asyncio.StreamReader) -> tuple[bytes, bool, bool]:
    """What the stream reader holds already (read from the socket before the
    relay took the transport), whether it saw the end, and whether its
    transport had been paused by the reader's own flow control.  The reader
    exposes none of it publicly: its attributes are read directly."""
    state: dict[str, Any] = vars(reader)
    buffer: bytearray = state["_buffer"]
    held = bytes(buffer)
    buffer.clear()
    paused = bool(state.get("_paused"))
    state["_paused"] = False
    return held, bool(state["_eof"]) or state.get("_exception") is not None, paused


def open_tunnel(
    a_reader: asyncio.StreamReader,
    a_writer: asyncio.StreamWriter,
    b_reader: asyncio.StreamReader,
    b_writer: asyncio.StreamWriter,
    *,
    idle_s: float,
    on_done: Callable[[Tunnel], None],
    counts: Counts | None = None,
) -> Tunnel:
    """Relay a <-> b from now on, until both directions end (or one side's
    connection ends, or the idle limit passes); ``up`` counts a -> b.  The
    streams must not be used again: their transports belong to the relay,
    and are closed when it ends.  ``on_done`` may run before this returns
    (a side already gone)."""
    tunnel = Tunnel(counts or Counts(), idle_s, on_done)
    ta: Any = a_writer.transport
    tb: Any = b_writer.transport
    a = tunnel.a = _End(tunnel, a_writer, up=True)
    b = tunnel.b = _End(tunnel, b_writer, up=False)
    a.peer, b.peer = b, a
    # Taken over synchronously: nothing reaches the stream readers in between.
    held_a, eof_a, paused_a = _take(a_reader)
    held_b, eof_b, paused_b = _take(b_reader)
    ta.set_protocol(a)
    tb.set_protocol(b)
    if ta.is_closing() or tb.is_closing():
        # A side already gone: what the other had sent still goes out.
        if held_a and not tb.is_closing():
            tb.write(held_a)
        if held_b and not ta.is_closing():
            ta.write(held_b)
        tunnel.close()
        return tunnel
    if held_a:
        a.data_received(held_a)
    if held_b:
        b.data_received(held_b)
    for end, eof, paused in ((a, eof_a, paused_a), (b, eof_b, paused_b)):
        if eof:
            end.eof_received()
        elif paused:
            end.transport.resume_reading()
    if not tunnel.finished:
        tunnel._arm()
    return tunnel


async def splice(
    a_reader: asyncio.StreamReader,
    a_writer: asyncio.StreamWriter,
    b_reader: asyncio.StreamReader,
    b_writer: asyncio.StreamWriter,
    *,
    idle_s: float,
    counts: Counts | None = None,
) -> Counts:
    """``open_tunnel``, awaited: returns when the relay has ended (closing
    it when cancelled)."""
    done: asyncio.Future[Counts] = asyncio.get_running_loop().create_future()

    def finished(t: Tunnel) -> None:
        if not done.done():
            done.set_result(t.counts)

    tunnel = open_tunnel(
        a_reader, a_writer, b_reader, b_writer, idle_s=idle_s, on_done=finished, counts=counts
    )
    try:
        return await done
    finally:
        tunnel.close()
