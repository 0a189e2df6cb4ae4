"""The client side: keep-alive connections per origin, a request written and
its response parsed with llhttp, the body read whole or streamed.

How a connection is opened (DNS, address checks, a parent proxy, TLS and
its verification) is the caller's ``Connector``; this module only keeps
connections, reuses them when the last response allowed it, and retries a
request once on a fresh connection when a reused one turns out to have
been closed by the server before answering (nothing was received, so the
request cannot have been processed twice... as far as HTTP/1.1 can tell).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httptools

from ingress.http1.message import Headers


@dataclass(frozen=True, slots=True)
class Origin:
    host: str
    port: int
    tls: bool = True

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class ConnectError(Exception):
    """An upstream connection that could not be made.  ``kind`` is a short
    label for metrics (resolve, private_address, refused, timeout, tls_verify,
    tls, parent_proxy); the message says why in words a user can act on."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class ResponseError(Exception):
    """The upstream's answer was cut or malformed."""


Connector = Callable[[Origin], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


class _Conn:
    __slots__ = ("idle_since", "origin", "reader", "reused", "writer")

    def __init__(self, origin: Origin, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.origin = origin
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0
        self.reused = False

    def alive(self) -> bool:
        return not (self.writer.is_closing() or self.reader.at_eof())

    def close(self) -> None:
        self.writer.close()


class _Parse:
    """Callback target of one response parser.  Interim answers (100, 103)
    pass through it and are ignored; ``final`` is set by the first other
    head."""

    __slots__ = ("body", "complete", "final", "headers", "parser", "reason")

    def __init__(self) -> None:
        self.headers: list[tuple[str, str]] = []
        self.body: deque[bytes] = deque()
        self.reason = b""
        self.final = False
        self.complete = False
        self.parser: httptools.HttpResponseParser | None = None

    def _interim(self) -> bool:
        assert self.parser is not None
        code = int(self.parser.get_status_code())
        return 100 <= code < 200 and code != 101

    def on_message_begin(self) -> None:
        if not self.final:
            self.headers = []
            self.reason = b""

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        if not self._interim():
            self.final = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.final:
            self.complete = True


class ClientResponse:
    """A response whose head has been read; the body is read on demand.  The
    connection goes back to the pool once the body was read to its end and
    both sides allow keep-alive; ``close`` drops it otherwise."""

    def __init__(self, pool: ClientPool, conn: _Conn, method: str, read_timeout_s: float) -> None:
        self._pool = pool
        self._conn: _Conn | None = conn
        self._method = method
        self._timeout = read_timeout_s
        self._p = _Parse()
        self._parser = httptools.HttpResponseParser(self._p)
        self._p.parser = self._parser
        self.status = 0
        self.reason = ""
        self.version = "1.1"
        self.headers = Headers()
        self.keep_alive = False
        self.upgraded: bytes | None = None  # bytes after a 101 head
        self.bytes_received = 0
        self._eof_ends_body = False

    async def _read_some(self) -> bytes:
        assert self._conn is not None
        async with asyncio.timeout(self._timeout):
            return await self._conn.reader.read(64 * 1024)

    def _feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = int(exc.args[0]) if exc.args else len(data)
            self.upgraded = data[offset:]
            self._p.complete = True
        except httptools.HttpParserError as exc:
            raise ResponseError(f"malformed response from upstream: {exc}") from None

    async def _read_head(self) -> None:
        p = self._p
        while True:
            data = await self._read_some()
            if not data:
                raise ResponseError("upstream closed the connection before answering")
            self.bytes_received += len(data)
            self._feed_head(data)
            if p.final:
                return

    def _feed_head(self, data: bytes) -> None:
        p = self._p
        self._feed(data)
        if not p.final or self.status:
            return
        parser = self._parser
        code = int(parser.get_status_code())
        self.status = code
        self.reason = p.reason.decode("latin-1")
        self.version = parser.get_http_version()
        self.headers = Headers(p.headers)
        if self._method == "HEAD" or code in (204, 304) or self.upgraded is not None:
            p.complete = True
        elif (
            self.headers.get("content-length") is None
            and "chunked" not in (self.headers.get("transfer-encoding") or "").lower()
        ):
            self._eof_ends_body = True
        # llhttp only answers should_keep_alive() at the message's end.
        tokens = {t.strip().lower() for v in self.headers.get_all("connection") for t in v.split(",")}
        persistent = "close" not in tokens if self.version == "1.1" else "keep-alive" in tokens
        self.keep_alive = persistent and not self._eof_ends_body

    async def chunks(self) -> AsyncIterator[bytes]:
        p = self._p
        while True:
            while p.body:
                yield p.body.popleft()
            if p.complete:
                break
            data = await self._read_some()
            if not data:
                if self._eof_ends_body:
                    break
                self.close()
                raise ResponseError("upstream closed the connection in the middle of the body")
            self.bytes_received += len(data)
            self._feed(data)
        self._done()

    async def read(self) -> bytes:
        return b"".join([c async for c in self.chunks()])

    def _done(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self.keep_alive and self.upgraded is None:
            self._pool.release(conn)
        else:
            conn.close()

    def take(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The raw connection after a 101 (it leaves the pool for good)."""
        conn, self._conn = self._conn, None
        assert conn is not None
        return conn.reader, conn.writer

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class ClientPool:
    def __init__(
        self,
        connector: Connector,
        *,
        max_idle_per_origin: int = 32,
        idle_ttl_s: float = 30.0,
        read_timeout_s: float = 300.0,
    ) -> None:
        self._connect = connector
        self._max_idle = max_idle_per_origin
        self._ttl = idle_ttl_s
        self._read_timeout = read_timeout_s
        self._idle: dict[Origin, deque[_Conn]] = {}
        self.opened = 0  # connections made (tests and metrics read it)

    async def _acquire(self, origin: Origin) -> _Conn:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.alive() and now - conn.idle_since < self._ttl:
                conn.reused = True
                return conn
            conn.close()
        reader, writer = await self._connect(origin)
        self.opened += 1
        return _Conn(origin, reader, writer)

    async def warm(self, origin: Origin) -> None:
        """Open a connection ahead of the first request (a new bumped flow
        overlaps its upstream handshake with the client's)."""
        conn = await self._acquire(origin)
        self.release(conn)

    def release(self, conn: _Conn) -> None:
        if not conn.alive():
            conn.close()
            return
        idle = self._idle.setdefault(conn.origin, deque())
        if len(idle) >= self._max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    async def request(
        self,
        origin: Origin,
        method: str,
        target: str,
        headers: Headers,
        body: bytes = b"",
        *,
        upgrade: str = "",
    ) -> ClientResponse:
        """Send one request; returns once the response head is read.  The
        caller reads the body (``chunks``/``read``) or closes the response;
        after a 101 to an ``upgrade`` request, ``take`` gives the raw streams."""
        head = f"{method} {target} HTTP/1.1\r\n".encode("latin-1")
        out = headers.without_hop_by_hop()
        if upgrade:
            out.add("Connection", "Upgrade")
            out.add("Upgrade", upgrade)
        if "host" not in out:
            default = 443 if origin.tls else 80
            out.add("Host", origin.host if origin.port == default else f"{origin.host}:{origin.port}")
        out.remove("content-length")
        if body or method in ("POST", "PUT", "PATCH"):
            out.add("Content-Length", str(len(body)))
        wire = head + out.encode() + b"\r\n" + body
        for attempt in (1, 2):
            conn = await self._acquire(origin)
            resp = ClientResponse(self, conn, method, self._read_timeout)
            try:
                conn.writer.write(wire)
                await conn.writer.drain()
                await resp._read_head()
            except (ConnectionError, OSError, ResponseError) as exc:
                resp.close()
                if conn.reused and attempt == 1 and resp.bytes_received == 0:
                    continue  # a stale keep-alive connection: the server had closed it
                if isinstance(exc, ResponseError):
                    raise
                raise ResponseError(f"upstream connection failed: {type(exc).__name__}") from None
            except BaseException:
                resp.close()
                raise
            return resp
        raise AssertionError("unreachable")

    async def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        await asyncio.sleep(0)

    def idle_count(self, origin: Origin | None = None) -> int:
        if origin is not None:
            return len(self._idle.get(origin, ()))
        return sum(len(v) for v in self._idle.values())


@contextlib.asynccontextmanager
async def opened(pool: ClientPool) -> AsyncIterator[ClientPool]:
    try:
        yield pool
    finally:
        await pool.close()
