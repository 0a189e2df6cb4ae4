"""The server side: one connection's requests, parsed and answered in order.

A reader task feeds llhttp (``httptools``) and queues complete requests, so
pipelined requests are parsed while an earlier one is served, and the end
of the connection is seen while a handler runs (``Request.disconnected``).
Responses go out in request order.  The limits bound what a client can make
the server hold: header bytes and count, body size, the time to send a
request head (slowloris), the idle time between requests, and how many
parsed requests may wait.

A handler is ``async def handler(request, responder)``: it answers once with
``responder.send(...)`` or streams with ``responder.start(...)`` and the
returned body writer; an ``Upgrade`` / ``CONNECT`` request may instead take
the raw streams with ``responder.detach()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httptools

from ingress.http1.message import Headers, Request, body_forbidden, status_line

log = logging.getLogger("nexus.http1")

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# Headers the layer writes itself; a handler's copies are dropped (it may
# still send hop-by-hop headers meant for its client, e.g. Proxy-Authenticate).
_FRAMING = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})


@dataclass(frozen=True, slots=True)
class Limits:
    max_header_bytes: int = 64 * 1024
    max_headers: int = 128
    max_body_bytes: int = 8 * 1024 * 1024
    # From the first byte of a request to the end of its headers.
    header_timeout_s: float = 10.0
    # Between requests on a kept-alive connection, and between two reads of
    # a body.
    idle_timeout_s: float = 75.0
    max_pipelined: int = 16
    read_size: int = 64 * 1024


class _Refused(Exception):
    """A request the parser callbacks refuse, with the status to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


Handler = Callable[[Request, "Responder"], Awaitable[None]]


class _Message:
    """httptools' callback target: builds one request at a time."""

    __slots__ = ("body", "body_size", "conn", "head_size", "headers", "url")

    def __init__(self, conn: _Connection) -> None:
        self.conn = conn
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.body_size = 0
        self.head_size = 0

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.body = []
        self.body_size = 0
        self.head_size = 0
        self.conn.head_started()

    def _grow(self, n: int) -> None:
        self.head_size += n
        if self.head_size > self.conn.limits.max_header_bytes:
            raise _Refused(431, "request head too large")

    def on_url(self, url: bytes) -> None:
        self._grow(len(url))
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._grow(len(name) + len(value) + 4)
        if len(self.headers) >= self.conn.limits.max_headers:
            raise _Refused(431, "too many header fields")
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.conn.head_done()
        headers = Headers(self.headers)
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.conn.limits.max_body_bytes:
            raise _Refused(413, "request body too large")
        expect = headers.get("expect")
        if expect is not None:
            if expect.lower() != "100-continue":
                raise _Refused(417, "unsupported expectation")
            self.conn.continue_wanted()

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size > self.conn.limits.max_body_bytes:
            raise _Refused(413, "request body too large")
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.conn.complete(self)


class _Connection:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        handler: Handler,
        limits: Limits,
        peer: str,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.handler = handler
        self.limits = limits
        self.peer = peer
        self.message = _Message(self)
        self.parser = httptools.HttpRequestParser(self.message)
        self.queue: deque[Request] = deque()
        self.wake = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()
        self.in_head = False  # between a message's first byte and the end of its headers
        self.in_body = False
        self.head_deadline = 0.0
        self.head_bytes = 0
        self.busy = False
        self.eof = False
        self.refused: _Refused | None = None
        self.current: Request | None = None
        self.upgraded: bytes | None = None  # bytes after an Upgrade/CONNECT head
        self.pending_continue = False
        self.detached = False
        self.taken = False  # a handler took the raw streams (Responder.detach)
        self.read_error: BaseException | None = None
        self.served = 0
        self.opened = time.monotonic()

    # --- parser callbacks -------------------------------------------------

    def head_started(self) -> None:
        self.in_head = True
        self.head_deadline = time.monotonic() + self.limits.header_timeout_s

    def head_done(self) -> None:
        self.in_head = False
        self.in_body = True
        self.head_bytes = 0

    def continue_wanted(self) -> None:
        # 100 Continue may only go out when no earlier response is on the
        # wire, or it would land inside that response.
        if not self.busy and not self.queue:
            self.writer.write(_CONTINUE)
        else:
            self.pending_continue = True

    def complete(self, msg: _Message) -> None:
        self.in_body = False
        p = self.parser
        req = Request(
            p.get_method().decode("latin-1"),
            msg.url.decode("latin-1"),
            p.get_http_version(),
            Headers(msg.headers),
            b"".join(msg.body),
            keep_alive=p.should_keep_alive(),
            upgrade=p.should_upgrade(),
            peer=self.peer,
            received_at=time.monotonic(),
        )
        self.queue.append(req)
        if len(self.queue) >= self.limits.max_pipelined:
            self.room.clear()
        self.wake.set()

    # --- the two loops -------------------------------------------------------

    def _read_timeout(self) -> float | None:
        if self.in_head:
            return max(self.head_deadline - time.monotonic(), 0.0)
        if self.in_body:
            return self.limits.idle_timeout_s
        if self.busy or self.queue:
            return None  # the client waits for us
        if self.served == 0:
            # A new connection owes its first request head within the
            # header timeout, not the (longer) keep-alive idle time.
            return max(self.opened + self.limits.header_timeout_s - time.monotonic(), 0.0)
        return self.limits.idle_timeout_s

    async def read_loop(self) -> None:
        try:
            while True:
                if not self.room.is_set():
                    await self.room.wait()
                try:
                    async with asyncio.timeout(self._read_timeout()):
                        data = await self.reader.read(self.limits.read_size)
                except TimeoutError:
                    if self.in_head:
                        self.refused = _Refused(408, "request head not received in time")
                    self.eof = True
                    return
                except (ConnectionError, OSError) as exc:
                    # Kept for the caller: a TLS alert here is how a client
                    # that refused our certificate says so under TLS 1.3.
                    self.read_error = exc
                    data = b""
                if not data:
                    self.eof = True
                    return
                try:
                    self.parser.feed_data(data)
                except httptools.HttpParserUpgrade as exc:
                    offset = int(exc.args[0]) if exc.args else len(data)
                    self.upgraded = data[offset:]
                    return  # the rest of the bytes belong to whoever takes the connection
                except httptools.HttpParserCallbackError as exc:
                    cause = exc.__context__
                    self.refused = cause if isinstance(cause, _Refused) else _Refused(400, "bad request")
                    return
                except httptools.HttpParserError:
                    self.refused = _Refused(400, "malformed request")
                    return
                # llhttp keeps a partial header line itself: count what was
                # fed while a head is incomplete, so one endless line is cut.
                if self.in_head:
                    self.head_bytes += len(data)
                    if self.head_bytes > self.limits.max_header_bytes:
                        self.refused = _Refused(431, "request head too large")
                        return
                else:
                    self.head_bytes = 0
        finally:
            if self.current is not None and (self.eof or self.refused is not None):
                self.current.disconnected.set()
            self.wake.set()

    async def serve_loop(self) -> None:
        while True:
            while not self.queue:
                if self.refused is not None:
                    await self._refuse(self.refused)
                    return
                if self.eof or self.upgraded is not None:
                    return
                self.wake.clear()
                if self.queue or self.eof or self.refused is not None:
                    continue
                await self.wake.wait()
            req = self.queue.popleft()
            self.served += 1
            self.room.set()
            self.busy = True
            self.current = req
            if self.eof and not self.queue:
                req.disconnected.set()
            responder = Responder(self, req)
            try:
                await self.handler(req, responder)
            except Exception as exc:
                if not isinstance(exc, ConnectionError):
                    log.exception("http1 handler failed for %s", req)
                if not responder.started and not req.disconnected.is_set():
                    with contextlib.suppress(ConnectionError, OSError):
                        await responder.send(500, body=b"internal error\n", close=True)
                return
            finally:
                self.busy = False
                self.current = None
            if responder.detached:
                self.detached = True
                return
            if not responder.finished:
                if not responder.started:
                    await responder.send(500, body=b"no response\n", close=True)
                return  # a half-written response ends the connection
            if responder.close_after or req.upgrade:
                return
            if self.pending_continue and not self.queue:
                self.pending_continue = False
                self.writer.write(_CONTINUE)

    async def _refuse(self, refused: _Refused) -> None:
        body = f"{refused}\n".encode()
        head = status_line(refused.status) + (
            f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode("latin-1")
        with contextlib.suppress(ConnectionError, OSError):
            self.writer.write(head + body)
            await self.writer.drain()


class BodyWriter:
    """The body of a started response: ``write`` chunks, then ``end``."""

    __slots__ = ("_chunked", "_none", "_r")

    def __init__(self, responder: Responder, chunked: bool, no_body: bool) -> None:
        self._r = responder
        self._chunked = chunked
        self._none = no_body

    async def write(self, data: bytes) -> None:
        if not data or self._none:
            return
        w = self._r.conn.writer
        if self._chunked:
            w.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            w.write(data)
        self._r.bytes_sent += len(data)
        await w.drain()

    async def end(self) -> None:
        if self._r.finished:
            return
        w = self._r.conn.writer
        if self._chunked and not self._none:
            w.write(b"0\r\n\r\n")
        self._r.finished = True
        await w.drain()


class Responder:
    __slots__ = ("bytes_sent", "close_after", "conn", "detached", "finished", "request", "started", "status")

    def __init__(self, conn: _Connection, request: Request) -> None:
        self.conn = conn
        self.request = request
        self.started = False
        self.finished = False
        self.detached = False
        self.close_after = not request.keep_alive
        self.status = 0
        self.bytes_sent = 0

    def _head(self, status: int, headers: Headers | None, framing: str, reason: str) -> bytes:
        out = Headers(
            (k, v) for k, v in (headers.items if headers is not None else ()) if k.lower() not in _FRAMING
        )
        if framing:
            out.add(*framing.split(": ", 1))
        if self.close_after or self.conn.eof:
            self.close_after = True
            out.add("Connection", "close")
        return status_line(status, reason) + out.encode() + b"\r\n"

    async def send(
        self,
        status: int,
        headers: Headers | None = None,
        body: bytes = b"",
        *,
        reason: str = "",
        close: bool = False,
    ) -> None:
        """The whole response at once, with a Content-Length."""
        self._begin(status, close)
        if body_forbidden(status, self.request.method):
            framing = f"Content-Length: {len(body)}" if self.request.method == "HEAD" else ""
            body = b""
        else:
            framing = f"Content-Length: {len(body)}"
        w = self.conn.writer
        w.write(self._head(status, headers, framing, reason) + body)
        self.bytes_sent += len(body)
        self.finished = True
        await w.drain()

    async def start(
        self,
        status: int,
        headers: Headers | None = None,
        *,
        content_length: int | None = None,
        reason: str = "",
        close: bool = False,
    ) -> BodyWriter:
        """Send the head; the body follows through the returned writer,
        chunked unless ``content_length`` is given (HTTP/1.0 clients get a
        body delimited by the connection's end)."""
        self._begin(status, close)
        no_body = body_forbidden(status, self.request.method)
        chunked = False
        if content_length is not None:
            framing = f"Content-Length: {content_length}"
        elif no_body:
            framing = ""
        elif self.request.version == "1.1":
            framing, chunked = "Transfer-Encoding: chunked", True
        else:
            framing = ""
            self.close_after = True
        self.conn.writer.write(self._head(status, headers, framing, reason))
        await self.conn.writer.drain()
        return BodyWriter(self, chunked, no_body)

    def _begin(self, status: int, close: bool) -> None:
        if self.started:
            raise RuntimeError("response already started")
        self.started = True
        self.status = status
        self.close_after = self.close_after or close

    def take_writer(self) -> asyncio.StreamWriter:
        """Write the response raw (a proxy relaying an origin's bytes as
        they come); the connection closes after it."""
        self._begin(200, True)
        self.finished = True
        return self.conn.writer

    def detach(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
        """Take the raw connection (after an Upgrade or CONNECT head): the
        server stops parsing and will not close it.  Returns the streams and
        the bytes already read past the request head."""
        if not self.request.upgrade or self.conn.upgraded is None:
            raise RuntimeError("only an Upgrade or CONNECT request can take the connection")
        self.detached = self.started = self.finished = True
        # Should the handler then fail, the server still closes the
        # connection but does not wait for it: a relay may have given the
        # transport a protocol of its own, and the stream would never hear
        # of the close.
        self.conn.taken = True
        return self.conn.reader, self.conn.writer, self.conn.upgraded


@dataclass(frozen=True, slots=True)
class Served:
    """How a connection ended."""

    detached: bool  # a handler took the raw connection (it is the handler's to close)
    requests: int
    read_error: BaseException | None  # what ended the reading, when not a clean EOF


async def serve_connection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    handler: Handler,
    limits: Limits = Limits(),
    *,
    peer: str = "",
    close: bool = True,
) -> Served:
    """Serve requests on one connection until it ends."""
    conn = _Connection(reader, writer, handler, limits, peer)
    reading = asyncio.create_task(conn.read_loop())
    try:
        await conn.serve_loop()
    finally:
        if not reading.done():
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
        if close and not conn.detached:
            writer.close()
            if not conn.taken:
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
    return Served(conn.detached, conn.served, conn.read_error)
