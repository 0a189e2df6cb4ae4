"""A minimal HTTP/1.1 keep-alive client on asyncio protocols, for the
open-loop load generator.

Why not aiohttp's client: on one (shared) core it tops out around 700
requests/s, so at 1000/s the benchmark would measure the client.  This one
sends a pre-built request and parses just enough of the answer (status,
Content-Length or chunked framing, the first content token of an SSE
stream) to time it; it costs a fraction of aiohttp per request.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from typing import cast
from urllib.parse import urlsplit

_FIRST_TOKEN = re.compile(rb'"content":\s*"[^"]')


class HttpError(Exception):
    """The connection broke or the answer was not HTTP/1.1 we understand."""


def build_request(url: str, headers: dict[str, str], body: bytes) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"only plain http URLs: {url!r}")
    host, port = parts.hostname, parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "content-length")]
    lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return host, port, head + body


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, float | None]] | None = None
        self.want_token = False
        self.first: float | None = None
        self.head_end = -1
        self.status = 0
        self.length = -1  # Content-Length, or -1 for chunked
        self.chunk_pos = 0
        self.keep_alive = True
        self.closed = False

    # -- asyncio.Protocol --
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(HttpError("connection closed before the answer ended"))

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():
            return
        self.buf += data
        try:
            self._parse()
        except (ValueError, IndexError) as exc:
            self.keep_alive = False
            self.waiter.set_exception(HttpError(f"unparseable answer: {exc}"))

    # -- one exchange --
    def send(self, payload: bytes, want_token: bool) -> asyncio.Future[tuple[int, float | None]]:
        if self.transport is None or self.closed:
            raise HttpError("connection is closed")
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        self.buf.clear()
        self.want_token = want_token
        self.first = None
        self.head_end = -1
        self.chunk_pos = 0
        self.transport.write(payload)
        return self.waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _parse(self) -> None:
        buf = self.buf
        if self.head_end < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).decode("latin-1").split("\r\n")
            self.status = int(head[0].split(" ", 2)[1])
            self.length, chunked = 0, False
            self.keep_alive = not head[0].startswith("HTTP/1.0")
            for line in head[1:]:
                name, _, value = line.partition(":")
                name, value = name.strip().lower(), value.strip().lower()
                if name == "content-length":
                    self.length = int(value)
                elif name == "transfer-encoding" and "chunked" in value:
                    chunked = True
                elif name == "connection":
                    self.keep_alive = value != "close"
            if chunked:
                self.length = -1
            self.head_end = end + 4
            self.chunk_pos = self.head_end
        if self.want_token and self.first is None and _FIRST_TOKEN.search(buf, self.head_end):
            self.first = time.perf_counter()
        if self.length >= 0:
            if len(buf) >= self.head_end + self.length:
                self._finish()
            return
        # chunked: walk the chunks received so far
        pos = self.chunk_pos
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
            if size == 0:
                if buf.find(b"\r\n", eol + 2) >= 0:  # the (empty) trailer's end
                    self._finish()
                break
            nxt = eol + 2 + size + 2
            if len(buf) < nxt:
                break
            pos = nxt
        self.chunk_pos = pos

    def _finish(self) -> None:
        assert self.waiter is not None
        self.waiter.set_result((self.status, self.first))


class Pool:
    """At most ``limit`` keep-alive connections; beyond that, callers wait
    for one to come free (and that wait counts in their latency)."""

    def __init__(self, host: str, port: int, limit: int) -> None:
        self.host, self.port, self.limit = host, port, limit
        self.idle: deque[_Conn] = deque()
        self.count = 0
        self.waiters: deque[asyncio.Future[_Conn | None]] = deque()

    async def acquire(self) -> _Conn:
        loop = asyncio.get_running_loop()
        while True:
            while self.idle:
                conn = self.idle.pop()
                if not conn.closed:
                    return conn
                self.count -= 1
            if self.count < self.limit:
                self.count += 1
                try:
                    _, proto = await loop.create_connection(_Conn, self.host, self.port)
                except OSError:
                    self.count -= 1
                    self._wake(None)
                    raise
                return proto
            fut: asyncio.Future[_Conn | None] = loop.create_future()
            self.waiters.append(fut)
            conn_or_slot = await fut
            if conn_or_slot is not None:
                return conn_or_slot

    def release(self, conn: _Conn, reusable: bool) -> None:
        if not reusable or conn.closed:
            conn.close()
            self.count -= 1
            self._wake(None)  # a slot is free: a waiter may open a connection
            return
        if not self._wake(conn):
            self.idle.append(conn)

    def _wake(self, value: _Conn | None) -> bool:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(value)
                return True
        return False

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


async def request(pool: Pool, payload: bytes, want_token: bool, timeout: float) -> tuple[int, float | None]:
    """Send one request; returns (status, time of the first content token)."""
    conn = await pool.acquire()
    ok = False
    try:
        result = await asyncio.wait_for(conn.send(payload, want_token), timeout)
        ok = conn.keep_alive
        return result
    finally:
        pool.release(conn, ok)
