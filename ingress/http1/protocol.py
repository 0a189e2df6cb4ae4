"""The server side as an ``asyncio.Protocol``: the lean HTTP/1.1 layer of a
hot path (the gateway's ``/v1`` API, issue 17).

``server.py`` (asyncio streams, a reader task per connection, the body
read whole before the handler runs) suits the proxy, which relays whole
messages.  Here a request goes to its handler as soon as its head is
parsed, and the handler reads the body itself, under its own limit and in
its own error format (a 413 is then on record like any other refusal);
nothing per read but the parser's callbacks, no task per connection, one
task per request (cancelled when the client goes away: the handler sees
``CancelledError``, as under aiohttp's handler cancellation).

What a client can make the server hold is bounded:

- the head: ``max_line_bytes`` per header line, ``max_headers`` fields,
  ``max_head_bytes`` in all (a line that never ends is cut there: llhttp
  keeps the partial line itself), all within ``header_timeout_s`` of the
  connection opening or of the next request's first byte (slowloris);
- the body: read only when the handler asks, up to the limit it gives
  (the socket stops being read while ``body_buffer`` bytes wait unread);
- pipelining: at most ``max_pipelined`` parsed requests wait, answered in
  order;
- an idle kept-alive connection closes after ``idle_timeout_s``.

A request the parser refuses (malformed, head too large, head too slow) is
answered by ``refuse`` (the front end's words and format) and the
connection closed, after the responses before it.  ``Expect:
100-continue`` is answered when the handler first reads the body, so a
request refused before that (a 413 by its Content-Length, a 401) never
makes the client send it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any, cast

import httptools

from ingress.http1.message import REASONS

log = logging.getLogger("nexus.http1")

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_FRAMING = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})
_STATUS: dict[int, bytes] = {
    code: f"HTTP/1.1 {code} {reason}\r\n".encode("latin-1") for code, reason in REASONS.items()
}


@dataclass(frozen=True, slots=True)
class Limits:
    max_line_bytes: int = 8190  # one header line (name and value), like aiohttp's
    max_headers: int = 128
    max_head_bytes: int = 64 * 1024  # the request line and every header
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 75.0
    max_pipelined: int = 16
    body_buffer: int = 256 * 1024  # unread body bytes before the socket is paused


class BodyError(Exception):
    """The body cannot be read: ``kind`` is ``too_large``, ``encoding``
    (it does not decode with its Content-Encoding), ``framing`` (broken
    chunked encoding) or ``cut`` (ended early)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class ClientGone(ConnectionError):
    """The connection closed while the response was being written."""


# What a refusal answers: (status, the head received so far) -> (content
# type, body, extra headers).
Refuse = Callable[[int, bytes], tuple[str, bytes]]
Handler = Callable[["Call"], Awaitable[None]]


class HeaderMap:
    """A request's headers: looked up without regard to case (the first of
    repeated fields, as aiohttp's ``get``), in their order for ``items``."""

    __slots__ = ("_items", "_map")

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items
        m: dict[str, str] = {}
        for k, v in items:
            m.setdefault(k.lower(), v)
        self._map = m

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._map.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._map

    def __getitem__(self, name: str) -> str:
        return self._map[name.lower()]

    def items(self) -> Iterable[tuple[str, str]]:
        return iter(self._items)

    def __repr__(self) -> str:
        return f"HeaderMap({[k for k, _ in self._items]})"


# The Content-Encodings a body is decoded from (what aiohttp's parser
# decodes); a body in another reaches the handler as it came (the front end
# decides which it accepts).
def _decoder(encoding: str) -> Any:
    if encoding == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    if encoding == "br":
        try:
            import brotli  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            return None
        return brotli.Decompressor()
    return None


def brotli_available() -> bool:
    try:
        import brotli  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        return False
    return True


DECODED = frozenset({"", "identity", "gzip", "deflate"} | ({"br"} if brotli_available() else set()))


class Call:
    """One request and its response.  The head is parsed when the handler
    gets it; ``read`` reads the body; ``send`` answers whole, ``start``
    begins a streamed (chunked) answer written with ``write`` and ``end``."""

    __slots__ = (
        "_body",
        "_body_size",
        "_chunked",
        "_complete",
        "_conn",
        "_continue",
        "_error",
        "_waiter",
        "close_after",
        "finished",
        "headers",
        "keep_alive",
        "method",
        "path",
        "peer",
        "started",
        "status",
        "target",
        "version",
    )

    def __init__(
        self,
        conn: ServerConnection,
        method: str,
        target: str,
        version: str,
        headers: HeaderMap,
        keep_alive: bool,
        expect_continue: bool,
    ) -> None:
        self._conn = conn
        self.method = method
        self.target = target
        path = target
        if path[:1] != "/" and "://" in path:
            # The absolute form ("POST http://host/v1/x HTTP/1.1"): its path,
            # as aiohttp reads it.
            rest = path.split("://", 1)[1]
            slash = rest.find("/")
            path = rest[slash:] if slash >= 0 else "/"
        q = path.find("?")
        self.path = path if q < 0 else path[:q]
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.peer = conn.peer
        self._body: list[bytes] = []
        self._body_size = 0
        self._complete = False
        self._error: BodyError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._continue = expect_continue
        self._chunked = False
        self.started = False
        self.finished = False
        self.close_after = not keep_alive
        self.status = 0

    # --- the body, fed by the connection ------------------------------------

    def _feed(self, data: bytes) -> None:
        self._body.append(data)
        self._body_size += len(data)
        self._wake()

    def _end(self, error: BodyError | None = None) -> None:
        if error is not None and not self._complete:
            self._error = error
        self._complete = True
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def read(self, limit: int) -> bytes:
        """The whole body, decoded from its Content-Encoding, at most
        ``limit`` bytes; raises ``BodyError``.  Once refused, the rest of the
        body is never read: the connection closes after the answer."""
        encoding = (self.headers.get("content-encoding") or "").strip().lower()
        declared = self.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            self.close_after = True
            raise BodyError("too_large")
        conn = self._conn
        if self._continue:
            self._continue = False
            if not self._complete and not conn.lost:
                conn.transport_write(_CONTINUE)
        decoder = _decoder(encoding) if encoding not in ("", "identity") else None
        parts: list[bytes] = []
        size = 0
        while True:
            if self._body:
                chunk = b"".join(self._body) if len(self._body) > 1 else self._body[0]
                self._body.clear()
                self._body_size = 0
                conn.body_taken()
                if decoder is not None:
                    try:
                        chunk = (
                            decoder.decompress(chunk, limit - size + 1)
                            if encoding != "br"
                            else (decoder.process(chunk))
                        )
                    except Exception:
                        self.close_after = True
                        raise BodyError("encoding") from None
                size += len(chunk)
                if size > limit:
                    self.close_after = True
                    raise BodyError("too_large")
                parts.append(chunk)
                continue
            if self._complete:
                break
            self._waiter = conn.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._error is not None:
            self.close_after = True
            raise self._error
        if decoder is not None and encoding != "br" and (decoder.unconsumed_tail or not decoder.eof):
            self.close_after = True
            raise BodyError("too_large" if decoder.unconsumed_tail else "encoding")
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    # --- the response ------------------------------------------------------------

    # What every response says first (e.g. b"Server: nexus\r\n"), and the
    # exception a write raises when the client has gone: a front end's own.
    server = b""
    gone: type[Exception] = ClientGone

    def _head(self, status: int, headers: dict[str, str], framing: bytes) -> bytes:
        conn = self._conn
        # A body not read to its end is still on the wire: the next request
        # cannot be found after it, so the connection closes.
        if self.close_after or conn.lost or conn.closing or not self._complete:
            self.close_after = True
        lines = [_STATUS.get(status) or f"HTTP/1.1 {status} Unknown\r\n".encode("latin-1")]
        fields = [f"{k}: {v}\r\n" for k, v in headers.items() if k.lower() not in _FRAMING]
        text = "".join(fields)
        # Response splitting: a line break inside a name or value.
        if text.count("\n") != len(fields) or text.count("\r") != len(fields):
            raise ValueError("a response header carries a line break")
        if self.server:
            lines.append(self.server)
        lines.append(text.encode("latin-1"))
        lines.append(conn.date_line())
        lines.append(framing)
        lines.append(b"Connection: close\r\n\r\n" if self.close_after else b"\r\n")
        return b"".join(lines)

    async def send(self, status: int, headers: dict[str, str], body: bytes, *, close: bool = False) -> None:
        """The whole response, with its Content-Length."""
        self._begin(status, close)
        no_body = self.method == "HEAD" or 100 <= status < 200 or status in (204, 304)
        framing = (
            b"" if status in (204, 304) or 100 <= status < 200 else b"Content-Length: %d\r\n" % len(body)
        )
        data = self._head(status, headers, framing)
        self.finished = True
        conn = self._conn
        if conn.lost:
            raise self.gone
        conn.transport_write(data if no_body else data + body)
        if conn.write_paused:
            await conn.drain(self.gone)

    async def start(self, status: int, headers: dict[str, str]) -> Call:
        """Begin a response whose body follows (``write``, then ``end``):
        chunked for HTTP/1.1, delimited by the connection's end for 1.0."""
        self._begin(status, False)
        if self.version == "1.1":
            self._chunked = True
            framing = b"Transfer-Encoding: chunked\r\n"
        else:
            self.close_after = True
            framing = b""
        conn = self._conn
        if conn.lost:
            raise self.gone
        conn.transport_write(self._head(status, headers, framing))
        if conn.write_paused:
            await conn.drain(self.gone)
        return self

    async def write(self, data: bytes) -> None:
        if not data or self.method == "HEAD":
            return
        conn = self._conn
        if conn.lost:
            raise self.gone
        conn.transport_write(b"%x\r\n%b\r\n" % (len(data), data) if self._chunked else data)
        if conn.write_paused:
            await conn.drain(self.gone)

    async def end(self) -> None:
        if self.finished:
            return
        self.finished = True
        conn = self._conn
        if conn.lost:
            raise self.gone
        if self._chunked and self.method != "HEAD":
            conn.transport_write(b"0\r\n\r\n")
        if conn.write_paused:
            await conn.drain(self.gone)

    def _begin(self, status: int, close: bool) -> None:
        if self.started:
            raise RuntimeError("response already started")
        self.started = True
        self.status = status
        if close:
            self.close_after = True


class ServerConnection(asyncio.Protocol):
    """One client connection (see the module's docstring)."""

    def __init__(
        self, handler: Handler, refuse: Refuse, limits: Limits = Limits(), call: type[Call] = Call
    ) -> None:
        self.handler = handler
        self.call_class = call
        self.refuse = refuse
        self.limits = limits
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        # The parser holds this connection's bound callbacks: a reference
        # cycle, broken when the connection is lost (``_release``).
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.peer = ""
        self.lost = False
        self.closing = False  # shutting down: close once the current response is out
        self.write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self.queue: deque[Call] = deque()
        self.current: Call | None = None  # being served
        self.task: asyncio.Task[None] | None = None
        self.running = False  # the current request's task has begun
        self.parsing: Call | None = None  # whose body is being parsed
        self.reading_paused = False
        # the request being parsed
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._head_bytes = 0
        self.in_head = False
        self.head_started = 0.0
        self.head_sample = b""
        self.opened = 0.0
        self.last_active = 0.0
        self.served = 0
        self.refused = 0  # the status of a refusal waiting to be answered
        self._timer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) and peer else ""
        self.opened = self.last_active = time.monotonic()
        self._arm(self.limits.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        if self.refused or self.lost:
            return
        if not self.in_head and self.current is None and not self.queue:
            self.head_sample = data[:2048]
        parser = self.parser
        if parser is None:
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self._refuse(cause.status if isinstance(cause, _Refused) else 400)
            return
        except httptools.HttpParserUpgrade:
            self._refuse(400)  # no upgrades on this layer
            return
        except httptools.HttpParserError:
            self._refuse(400)
            return
        if self.in_head:
            # llhttp keeps a partial header line itself: count what is fed
            # while a head is incomplete, so one endless line is cut.
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_head_bytes:
                self._refuse(431)

    def eof_received(self) -> bool | None:
        return None  # close: a client that half-closes is taken as gone

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for call in (self.parsing, *self.queue):
            if call is not None:
                call._end(BodyError("cut"))
        if self.current is not None:
            self.current._end(BodyError("cut"))
        self.queue.clear()
        task = self.task
        if task is not None and not task.done():
            task.cancel()  # the caller left: its request stops (a 499)
        d = self._drain
        if d is not None and not d.done():
            d.set_exception(ClientGone())
            d.exception()  # retrieved: nobody may be waiting
        self._release()

    def _release(self) -> None:
        """Drop what refers back to this connection (the parser's bound
        callbacks, the request whose body was being parsed, a finished
        request's task), so a closed connection is freed by reference
        counting the moment the last reference goes.  Left to the cyclic
        collector, closed connections piled up under overload: its full
        passes are rare once start-up's heap is frozen (ingress/gateway/cli.py),
        and 959 closed connections were still allocated ten seconds after a
        2x-peak run.  A request still running keeps its task (the
        connection's ``task`` is cleared when that ends)."""
        self.parser = None
        self.parsing = None
        self._drain = None
        task = self.task
        if task is not None and task.done():
            self.task = None

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        d = self._drain
        if d is not None and not d.done():
            d.set_result(None)

    # --- writing ---------------------------------------------------------------

    def transport_write(self, data: bytes) -> None:
        t = self.transport
        if t is not None and not self.lost:
            t.write(data)

    async def drain(self, gone: type[Exception] = ClientGone) -> None:
        """Wait while the transport's buffer is over its high-water mark;
        raises ``gone`` when the connection closes meanwhile."""
        if self.lost:
            raise gone
        if not self.write_paused:
            return
        if self._drain is None or self._drain.done():
            self._drain = self.loop.create_future()
        try:
            await asyncio.shield(self._drain)
        except ClientGone:
            raise gone from None

    _date = b""
    _date_at = 0

    def date_line(self) -> bytes:
        now = int(time.time())
        cls = ServerConnection
        if now != cls._date_at:
            cls._date_at = now
            cls._date = f"Date: {formatdate(now, usegmt=True)}\r\n".encode("latin-1")
        return cls._date

    # --- httptools callbacks ---------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._head_bytes = 0
        self.in_head = True
        self.head_started = time.monotonic()

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limits.max_line_bytes:
            raise _Refused(431)

    def on_header(self, name: bytes, value: bytes) -> None:
        if (
            len(name) + len(value) > self.limits.max_line_bytes
            or len(self._headers) >= self.limits.max_headers
        ):
            raise _Refused(431)
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.in_head = False
        self._head_bytes = 0
        p = self.parser
        assert p is not None  # (called from feed_data)
        headers = HeaderMap(self._headers)
        expect = headers.get("expect")
        if expect is not None and expect.lower() != "100-continue":
            raise _Refused(417)
        call = self.call_class(
            self,
            p.get_method().decode("latin-1"),
            self._url.decode("latin-1"),
            p.get_http_version(),
            headers,
            p.should_keep_alive(),
            expect is not None,
        )
        self.parsing = call
        self.queue.append(call)
        if self.current is None:
            self._next()
        elif len(self.queue) >= self.limits.max_pipelined:
            self._pause_reading()

    def on_body(self, body: bytes) -> None:
        call = self.parsing
        if call is not None:
            call._feed(body)
            if call._body_size > self.limits.body_buffer:
                self._pause_reading()

    def on_message_complete(self) -> None:
        call = self.parsing
        self.parsing = None
        if call is not None:
            call._end()

    # --- serving -------------------------------------------------------------------

    def body_taken(self) -> None:
        if self.reading_paused and len(self.queue) < self.limits.max_pipelined:
            self._resume_reading()

    def _pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.lost:
            self.reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.lost:
            self.reading_paused = False
            self.transport.resume_reading()

    def _next(self) -> None:
        if not self.queue:
            return
        call = self.queue.popleft()
        self.current = call
        self.served += 1
        self.task = self.loop.create_task(self._serve(call))

    async def _serve(self, call: Call) -> None:
        self.running = True
        try:
            await self.handler(call)
        except asyncio.CancelledError:
            self.current = None
            self.running = False
            if self.lost:
                # This task's CancelledError keeps its frame, which refers
                # to this connection: no cycle through ``task``.
                self.task = None
            return
        except Exception as exc:
            if not isinstance(exc, ConnectionError):
                log.exception("http1 handler failed for %s %s", call.method, call.path)
            if not call.started and not self.lost:
                with contextlib.suppress(ConnectionError):
                    await call.send(500, {"Content-Type": "text/plain"}, b"internal error\n", close=True)
            call.close_after = True
        self.current = None
        self.running = False
        self.last_active = time.monotonic()
        if self.lost:
            self.task = None  # (see _release)
            return
        if not call.finished:
            if call.started:  # a half-written response ends the connection
                self._close()
                return
            call.close_after = True
            with contextlib.suppress(ConnectionError):
                await call.send(500, {"Content-Type": "text/plain"}, b"no response\n", close=True)
        # The rest of an unread body is still on the wire: the next request
        # cannot be found after it.
        if not call._complete:
            call.close_after = True
        if call.close_after or self.closing:
            self._close()
            return
        if self.refused and not self.queue:
            self._answer_refusal()
            return
        if self.reading_paused and len(self.queue) < self.limits.max_pipelined:
            self._resume_reading()
        self._next()

    def shutdown(self) -> None:
        """The server stops: close now if idle, else after the response
        being written (its ``Connection: close`` says so when not begun)."""
        self.closing = True
        if self.current is None:
            self._close()

    def _close(self) -> None:
        t = self.transport
        if t is not None and not self.lost:
            t.close()

    # --- refusals and timers -----------------------------------------------------------

    def _refuse(self, status: int) -> None:
        """The parser's framing is lost: answer once what is queued before
        it was answered, then close."""
        self.refused = status
        self.in_head = False
        broken = self.parsing
        if broken is not None:
            broken._end(BodyError("framing"))
            self.parsing = None
        if self.transport is not None and not self.lost:
            self.transport.pause_reading()
        task = self.task
        if broken is not None and self.current is broken and task is not None and not self.running:
            # Refused in the same bytes that completed a head: its handler
            # has not run a step yet, and never will (as if the parser had
            # refused the head itself).
            task.cancel()
            self.current = None
            self.queue.clear()
        if self.current is None and not self.queue:
            self._answer_refusal()

    def _answer_refusal(self) -> None:
        status = self.refused
        content_type, body = self.refuse(status, self.head_sample)
        reason = REASONS.get(status, "Error")
        head = (
            f"HTTP/1.1 {status} {reason}\r\nServer: nexus\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n"
        ).encode("latin-1")
        self.transport_write(head + self.date_line() + b"\r\n" + body)
        self._close()

    def _arm(self, delay: float) -> None:
        self._timer = self.loop.call_later(max(delay, 0.01), self._tick)

    def _tick(self) -> None:
        """One timer per connection, re-armed for the next deadline: the
        head's (from the connection's opening or the request's first byte)
        and the idle keep-alive's."""
        self._timer = None
        if self.lost or self.refused:
            return
        now = time.monotonic()
        lim = self.limits
        if self.in_head or (self.served == 0 and self.current is None and not self.queue):
            start = self.head_started if self.in_head and self.served else self.opened
            if self.in_head and self.served == 0:
                start = self.opened
            if now - start >= lim.header_timeout_s:
                self.in_head = False
                self.refused = 408
                if self.current is None and not self.queue:
                    self._answer_refusal()
                return
            self._arm(start + lim.header_timeout_s - now)
            return
        if self.current is None and not self.queue:
            if now - self.last_active >= lim.idle_timeout_s:
                self._close()
                return
            self._arm(min(self.last_active + lim.idle_timeout_s - now, lim.header_timeout_s))
            return
        self._arm(lim.header_timeout_s)


class _Refused(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


__all__ = ["DECODED", "BodyError", "Call", "ClientGone", "HeaderMap", "Limits", "ServerConnection"]
