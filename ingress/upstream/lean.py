"""The lean client for provider calls (issue 17): HTTP/1.1 on asyncio
protocols, parsed with ``httptools`` (llhttp), keep-alive connections per
origin, one pool per provider.

It does what the aiohttp session of a provider did, at a fraction of the
instructions per request:

- the SSRF guard: a host name is resolved (cached 60 s, as aiohttp's
  connector did) and refused when any address it gives is not public,
  unless the provider allows private networks; a literal address was
  judged by the URL check (``check_outbound_url``) before the call;
- TLS verified against the system store (and ``SSL_CERT_FILE``), as
  aiohttp's default context does;
- the provider's connect timeout (resolving, connecting, the TLS
  handshake, and waiting for a free connection of the pool) and read
  timeout (no byte for that long while the caller waits for some), both
  ``TransportTimeout`` (a ``TimeoutError``);
- ``max_connections`` connections in use at most, further calls waiting
  for one; idle ones kept 15 s;
- ``Accept-Encoding: gzip, deflate`` sent and the body decompressed, as
  aiohttp did, so the call stage sees the same bytes;
- a response body relayed as it arrives (the socket stops being read while
  more than ``_HIGH_WATER`` bytes wait for the caller), read to its end
  before its connection is reused, the connection closed otherwise (an
  error, a caller gone, a cancellation);
- a request sent on a reused connection that the server had closed before
  answering anything is sent again once on a new one.

A caller with its own idea of where connections go (the compliance proxy:
its resolve override and private-CIDR guard, a parent proxy) hands it a
``resolve`` hook or a ``parent`` to tunnel through.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import os
import socket
import ssl
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Protocol, cast
from urllib.parse import unquote, urlsplit

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from ingress.upstream.transport import Response, TransportError, TransportTimeout

_IDLE_TTL_S = 15.0  # aiohttp's keep-alive timeout
_DNS_TTL_S = 60.0  # aiohttp's ttl_dns_cache in the pool
_HIGH_WATER = 256 * 1024
_READ_SIZE_HINT = 64 * 1024
_ACCEPT = "Accept: */*\r\nAccept-Encoding: gzip, deflate\r\n"

Origin = tuple[bool, str, int]  # (tls, host, port)
Resolve = Callable[[str, int], Awaitable[list[tuple[str, int]]]]


_CONTEXTS: dict[tuple[str, str], ssl.SSLContext] = {}


def verify_context() -> ssl.SSLContext:
    """What aiohttp verifies with: the system store (``SSL_CERT_FILE`` and
    ``SSL_CERT_DIR`` honoured by OpenSSL), host names checked.  One per
    process (loading the store takes milliseconds), kept by the variables'
    values."""
    key = (os.environ.get("SSL_CERT_FILE", ""), os.environ.get("SSL_CERT_DIR", ""))
    ctx = _CONTEXTS.get(key)
    if ctx is None:
        ctx = ssl.create_default_context()
        ctx.set_alpn_protocols(["http/1.1"])
        _CONTEXTS[key] = ctx
    return ctx


class _Url:
    """A URL as a request needs it, parsed once (the same few URLs serve
    every call of a provider)."""

    __slots__ = ("authorization", "head", "origin")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TransportError(f"not an http(s) URL: {parts.scheme}://{parts.hostname or ''}")
        tls = parts.scheme == "https"
        try:
            port = parts.port or (443 if tls else 80)
        except ValueError:
            raise TransportError("the URL's port is not a number") from None
        host = parts.hostname
        self.origin: Origin = (tls, host, port)
        shown = f"[{host}]" if ":" in host else host
        if port != (443 if tls else 80):
            shown = f"{shown}:{port}"
        target = parts.path or "/"
        if parts.query:
            target = f"{target}?{parts.query}"
        if any(c in target or c in shown for c in "\r\n \t"):
            raise TransportError("the URL carries white space")
        # The request line and Host, as text; the headers follow per call.
        self.head = f" {target} HTTP/1.1\r\nHost: {shown}\r\n"
        self.authorization = ""
        if parts.username is not None:
            # aiohttp sends a URL's user info as Basic authentication.
            raw = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            self.authorization = "Basic " + base64.b64encode(raw).decode("ascii")


class LeanResponse:
    """One response: the head read, the body as the connection delivers it.
    Also the parser's callback target while the response is being read."""

    __slots__ = (
        "_conn",
        "_decoder",
        "_error",
        "_header_names",
        "_header_values",
        "_headers",
        "_waiter",
        "buffered",
        "complete",
        "eof_body",
        "got_head",
        "keep_alive",
        "parts",
        "received",
        "status",
    )

    def __init__(self, conn: _Connection) -> None:
        self._conn: _Connection | None = conn
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._decoder: Decoder | None = None
        self._header_names: list[bytes] = []
        self._header_values: list[bytes] = []
        self.status = 0
        self._headers: CIMultiDictProxy[str] | None = None
        self.parts: deque[bytes] = deque()
        self.buffered = 0
        self.got_head = False
        self.complete = False
        self.keep_alive = False
        self.eof_body = False  # no length and not chunked: the body ends with the connection
        self.received = 0

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        if self._headers is None:
            if not self.got_head:
                return _EMPTY
            self._headers = CIMultiDictProxy(
                CIMultiDict(
                    zip(
                        [n.decode("latin-1") for n in self._header_names],
                        [v.decode("latin-1") for v in self._header_values],
                        strict=True,
                    )
                )
            )
        return self._headers

    # -- the parser's callbacks ------------------------------------------

    def on_message_begin(self) -> None:
        self._header_names.clear()
        self._header_values.clear()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_names.append(name)
        self._header_values.append(value)

    def on_headers_complete(self) -> None:
        conn = self._conn
        assert conn is not None
        status = conn.parser.get_status_code()
        if 100 <= status < 200:
            return  # an interim answer (100 Continue, 103): the final one follows
        self.status = status
        # The headers become a mapping only if asked for (an error's
        # normaliser reads them; a 200 is read by its body alone): here
        # only what frames and encodes the body is looked for.
        framed = False
        names = self._header_names
        for i in range(len(names)):
            n = names[i]
            if len(n) in (14, 16, 17):
                ln = n.lower()
                if ln == b"content-length" or ln == b"transfer-encoding":
                    framed = True
                elif ln == b"content-encoding":
                    self._decoder = _decoder(self._header_values[i].decode("latin-1"))
        if not framed and status not in (204, 304):
            self.eof_body = True
        self.got_head = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        if not self.got_head:
            return  # an interim answer's body (none is allowed; ignored)
        if self._decoder is not None:
            try:
                body = self._decoder.decompress(body)
            except zlib.error:
                raise _BadBody from None
            if not body:
                return
        self.parts.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and self._conn is not None:
            self._conn.pause()
        if self._waiter is not None:
            self._wake()

    def on_message_complete(self) -> None:
        if not self.got_head:
            return
        conn = self._conn
        assert conn is not None
        if self._decoder is not None:
            try:
                tail = self._decoder.flush()
            except zlib.error:
                raise _BadBody from None
            if tail:
                self.parts.append(tail)
        self.keep_alive = conn.parser.should_keep_alive()
        self.complete = True
        conn.finished(self)
        self._wake()

    # -- the connection's side -------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def fail(self, error: BaseException) -> None:
        if self.complete or self._error is not None:
            return
        self._error = error
        self._wake()

    def closed_by_peer(self) -> None:
        if self.got_head and self.eof_body and not self.complete:
            # The body was delimited by the end of the connection.
            self.complete = True
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.client.done(conn, False)
            self._wake()
            return
        if self.got_head:
            self.fail(TransportError("the provider closed the connection in the middle of the body"))
        else:
            self.fail(TransportError("the provider closed the connection before answering"))

    async def wait(self) -> None:
        """Until the parser moved on (a head, a body part, the end) or the
        connection failed; the read timeout bounds the wait."""
        if self._error is not None:
            raise self._error
        conn = self._conn
        assert conn is not None
        waiter = conn.loop.create_future()
        self._waiter = waiter
        conn.waiting(self)
        try:
            await waiter
        except BaseException:
            self._waiter = None
            raise
        if self._error is not None:
            raise self._error

    # -- the caller's side -----------------------------------------------

    def _take(self) -> bytes:
        """Everything that has arrived and not been taken, as one piece."""
        parts = self.parts
        if len(parts) == 1:
            data = parts.popleft()
        else:
            data = b"".join(parts)
            parts.clear()
        self.buffered = 0
        return data

    async def read(self) -> bytes:
        while not self.complete:
            await self.wait()
        return self._take()

    async def chunks(self) -> AsyncIterator[bytes]:
        """What has arrived, each time joined into one piece (as aiohttp's
        ``iter_any``): a read that brought many chunked-encoding chunks
        (many SSE events) is one turn of the caller's loop, not many."""
        parts = self.parts
        while True:
            if parts:
                data = self._take()
                conn = self._conn
                if conn is not None and conn.paused:
                    conn.resume()
                yield data
                continue
            if self.complete:
                return
            await self.wait()

    def release(self) -> None:
        """The connection back to the pool if the response was read to its
        end and both sides keep it alive; closed otherwise."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        conn.client.done(conn, self.complete and self.keep_alive and not self.parts)

    close = release


class _BadBody(Exception):
    """A compressed body that does not decompress (raised in a callback,
    surfaced by the parser as a callback error)."""


def _decoder(encoding: str) -> Decoder | None:
    e = encoding.strip().lower()
    if e in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if e == "deflate":
        # A zlib stream (RFC 9110) or, as some servers send, raw deflate:
        # 32 + MAX_WBITS takes the zlib (or gzip) wrapper; raw is tried
        # below when the wrapper is absent.
        return _Deflate()
    if e in ("", "identity"):
        return None
    raise TransportError(f"the provider's answer is encoded as {encoding!r}, which was not asked for")


class _Deflate:
    """``deflate`` either way: a zlib wrapper, or none."""

    __slots__ = ("_d",)

    def __init__(self) -> None:
        self._d: Decoder | None = None

    def decompress(self, data: bytes) -> bytes:
        if self._d is None:
            raw = not data or (data[0] & 0x0F) != 8  # a zlib header's compression method
            self._d = zlib.decompressobj(-zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
        return self._d.decompress(data)

    def flush(self) -> bytes:
        return self._d.flush() if self._d is not None else b""


class Decoder(Protocol):
    """A zlib decompressor, or ``_Deflate`` choosing one."""

    def decompress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


_EMPTY: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())


class _Connection(asyncio.Protocol):
    __slots__ = (
        "client",
        "closed",
        "idle_since",
        "last_read",
        "loop",
        "origin",
        "parser",
        "paused",
        "response",
        "reused",
        "timer",
        "transport",
    )

    def __init__(self, client: LeanClient, origin: Origin) -> None:
        self.client = client
        self.origin = origin
        self.loop = client.loop
        self.transport: asyncio.Transport | None = None
        self.response: LeanResponse | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.paused = False
        self.reused = False
        self.idle_since = 0.0
        self.last_read = 0.0
        self.timer: asyncio.TimerHandle | None = None

    # The parser calls these on the connection; each goes to the response
    # being read (one parser per connection: llhttp resets between messages).
    def on_message_begin(self) -> None:
        r = self.response
        if r is not None:
            r.on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        r = self.response
        if r is not None:
            r.on_header(name, value)

    def on_headers_complete(self) -> None:
        r = self.response
        if r is not None:
            r.on_headers_complete()

    def on_body(self, body: bytes) -> None:
        r = self.response
        if r is not None:
            r.on_body(body)

    def on_message_complete(self) -> None:
        r = self.response
        if r is not None:
            r.on_message_complete()

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TLS transport is not an asyncio.Transport subclass.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        r = self.response
        if r is None:
            # Bytes nobody asked for (on an idle connection): it cannot
            # be trusted with the next request.
            self.abort()
            return
        r.received += len(data)
        self.last_read = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, TransportError):
                r.fail(cause)
            else:
                r.fail(TransportError("the provider's compressed body does not decompress"))
            self.abort()
        except httptools.HttpParserUpgrade:
            r.fail(TransportError("the provider switched protocols unasked"))
            self.abort()
        except httptools.HttpParserError as exc:
            r.fail(TransportError(f"malformed answer from the provider: {exc}"))
            self.abort()

    def eof_received(self) -> bool:
        return False  # close: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_timer()
        r = self.response
        if r is not None:
            r.closed_by_peer()

    # -- used by the response and the client -------------------------------

    def pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def waiting(self, r: LeanResponse) -> None:
        """The caller waits for bytes: the read timeout runs."""
        if self.timer is None:
            self.last_read = self.loop.time()
            self.timer = self.loop.call_at(self.last_read + self.client.read_timeout_s, self._check_read)

    def _check_read(self) -> None:
        self.timer = None
        r = self.response
        if r is None or r.complete:
            return
        due = self.last_read + self.client.read_timeout_s
        if r._waiter is None or self.loop.time() < due:
            # Bytes came since (or nobody waits now: a caller slow to read
            # is not the provider's delay): look again later.
            if r._waiter is None:
                due = self.loop.time() + self.client.read_timeout_s
            self.timer = self.loop.call_at(due, self._check_read)
            return
        r.fail(TransportTimeout("the provider sent nothing within its read timeout"))
        self.abort()

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def finished(self, r: LeanResponse) -> None:
        self._stop_timer()

    def send(self, wire: bytes, r: LeanResponse) -> None:
        self.response = r
        assert self.transport is not None
        self.transport.write(wire)

    def abort(self) -> None:
        self.closed = True
        self._stop_timer()
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.closed = True
        self._stop_timer()
        if self.transport is not None:
            self.transport.close()


class _Tunnel(asyncio.Protocol):
    """A parent proxy's answer to ``CONNECT``: the head, then the
    connection is handed to the client's protocol (or TLS)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.answer: asyncio.Future[bytes] = loop.create_future()
        self.buffer = b""
        self.extra = b""

    def data_received(self, data: bytes) -> None:
        if self.answer.done():
            self.extra += data
            return
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end >= 0:
            self.extra = self.buffer[end + 4 :]
            self.answer.set_result(self.buffer[: end + 4])
        elif len(self.buffer) > 16 * 1024:
            self.answer.set_exception(TransportError("the parent proxy's answer to CONNECT is too long"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_exception(TransportError("the parent proxy closed the connection"))


class LeanClient:
    """The connections of one provider (every origin its URLs name: a
    Replicate stream lives on another host than its API)."""

    def __init__(
        self,
        *,
        max_connections: int,
        connect_timeout_s: float,
        read_timeout_s: float,
        allow_private: bool,
        verify: ssl.SSLContext | None = None,
        resolve: Resolve | None = None,
        parent: tuple[str, int] | None = None,
    ) -> None:
        """``resolve``: where a host's connections go, instead of DNS with
        the private-address check and its cache: the addresses (and ports)
        to try, asked for every new connection, literal hosts included;
        it refuses a host by raising ``TransportError`` or ``OSError``.
        (A caller with its own override and guard, as the compliance
        proxy's ``Upstreams.resolve``, hands it in.)  TLS is still verified
        against the URL's host name.

        ``parent``: a parent proxy (host, port) every connection goes
        through, by ``CONNECT``; the parent resolves the targets (neither
        DNS nor ``resolve`` is asked here), TLS to the target runs inside
        the tunnel."""
        self.loop = asyncio.get_running_loop()
        self._resolve_hook = resolve
        self._parent = parent
        self.limit = max(1, max_connections)
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.allow_private = allow_private
        self.verify = verify if verify is not None else verify_context()
        self.in_use = 0
        self.opened = 0  # connections made (tests read it)
        self._idle: dict[Origin, list[_Connection]] = {}
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._urls: dict[str, _Url] = {}
        self._dns: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def _url(self, url: str) -> _Url:
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) >= 256:
                self._urls.clear()  # URLs with ids in them (a Replicate stream): bounded
            parsed = self._urls[url] = _Url(url)
        return parsed

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> Response:
        """Send one request; returns once the final head is read.  The
        caller reads the body and releases the response."""
        if self._closed:
            raise TransportError("the provider's client is closed")
        u = self._url(url)
        wire = self._wire(method, u, headers, body)
        for attempt in (1, 2):
            conn = await self._acquire(u.origin, fresh=attempt == 2)
            r = LeanResponse(conn)
            try:
                conn.send(wire, r)
                while not r.got_head:
                    await r.wait()
            except TransportTimeout:
                r.release()
                raise
            except TransportError:
                r.release()
                if attempt == 1 and conn.reused and r.received == 0:
                    continue  # a kept connection the server had closed: once more on a new one
                raise
            except BaseException:
                r.release()  # cancelled, or the total timeout: the connection goes
                raise
            return r
        raise AssertionError("unreachable")

    def _wire(self, method: str, u: _Url, headers: Mapping[str, str], body: bytes | None) -> bytes:
        given: list[str] = []
        has_type = has_encoding = has_accept = has_auth = False
        for k, v in headers.items():
            lk = k.lower()
            if lk in ("host", "content-length", "transfer-encoding", "connection"):
                continue  # the client frames the message itself
            if lk == "content-type":
                has_type = True
            elif lk == "accept-encoding":
                has_encoding = True
            elif lk == "accept":
                has_accept = True
            elif lk == "authorization":
                has_auth = True
            given.append(f"{k}: {v}\r\n")
        text = "".join(given)
        # Each header is one line: a name or value that brought its own
        # line break would smuggle a header (or a request) in.
        if text.count("\n") != len(given) or text.count("\r") != len(given):
            raise TransportError("a request header carries a line break")
        lines = [method, u.head, text]
        if not has_accept and not has_encoding:
            lines.append(_ACCEPT)
        else:
            if not has_accept:
                lines.append("Accept: */*\r\n")
            if not has_encoding:
                lines.append("Accept-Encoding: gzip, deflate\r\n")
        if u.authorization and not has_auth:
            lines.append(f"Authorization: {u.authorization}\r\n")
        if body:
            if not has_type:
                lines.append("Content-Type: application/octet-stream\r\n")  # aiohttp's default
            lines.append(f"Content-Length: {len(body)}\r\n\r\n")
        elif method in ("POST", "PUT", "PATCH"):
            lines.append("Content-Length: 0\r\n\r\n")
        else:
            lines.append("\r\n")
        head = "".join(lines)
        wire = head.encode("latin-1", "strict") if head.isascii() else _latin1(head)
        return wire + body if body else wire

    async def _acquire(self, origin: Origin, *, fresh: bool) -> _Connection:
        if self.in_use >= self.limit:
            await self._wait_for_slot()
        self.in_use += 1
        try:
            if not fresh:
                idle = self._idle.get(origin)
                if idle:
                    now = time.monotonic()
                    while idle:
                        conn = idle.pop()
                        if not conn.closed and now - conn.idle_since < _IDLE_TTL_S:
                            conn.reused = True
                            return conn
                        conn.close()
            return await self._connect(origin)
        except BaseException:
            self.in_use -= 1
            self._wake_one()
            raise

    async def _wait_for_slot(self) -> None:
        """Until fewer than ``limit`` connections are in use (first come,
        first served), within the connect timeout (aiohttp counted the wait
        for a pooled connection in it too)."""
        deadline = self.loop.time() + self.connect_timeout_s
        while self.in_use >= self.limit:
            waiter: asyncio.Future[None] = self.loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except TimeoutError:
                raise TransportTimeout("no connection of the provider's pool came free in time") from None
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # woken, then cancelled: the turn passes on
                raise
            finally:
                if not waiter.done():
                    waiter.cancel()
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def done(self, conn: _Connection, reusable: bool) -> None:
        """A response ended (read through, or left): its connection kept or closed."""
        conn.response = None
        self.in_use -= 1
        if reusable and not conn.closed and not self._closed:
            if conn.paused:
                conn.resume()
            conn.idle_since = time.monotonic()
            idle = self._idle.get(conn.origin)
            if idle is None:
                idle = self._idle[conn.origin] = []
            if len(idle) < self.limit:
                idle.append(conn)
            else:
                conn.close()
        else:
            conn.close()
        if self._waiters:
            self._wake_one()

    async def _connect(self, origin: Origin) -> _Connection:
        tls, host, port = origin
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                if self._parent is not None:
                    return await self._through_parent(origin, self._parent)
                if self._resolve_hook is not None:
                    try:
                        targets = await self._resolve_hook(host, port)
                    except OSError as exc:
                        raise TransportError(str(exc) or f"{host} refused") from None
                else:
                    targets = [(a, port) for a in await self._resolve(host, port)]
                last: OSError | None = None
                for address, address_port in targets:
                    try:
                        _, conn = await self.loop.create_connection(
                            lambda: _Connection(self, origin),
                            address,
                            address_port,
                            ssl=self.verify if tls else None,
                            server_hostname=host if tls else None,
                        )
                    except ssl.SSLCertVerificationError as exc:
                        raise TransportError(
                            f"the certificate of {host} failed verification: {exc.verify_message}"
                        ) from None
                    except OSError as exc:
                        last = exc
                        continue
                    self.opened += 1
                    return conn
        except TimeoutError:
            raise TransportTimeout(f"no connection to {host}:{port} within the connect timeout") from None
        if last is None:
            raise TransportError(f"{host} resolves to no address")
        raise TransportError(f"cannot connect to {host}:{port} ({type(last).__name__})")

    async def _through_parent(self, origin: Origin, parent: tuple[str, int]) -> _Connection:
        tls, host, port = origin
        phost, pport = parent
        try:
            transport, tunnel = await self.loop.create_connection(lambda: _Tunnel(self.loop), phost, pport)
        except OSError as exc:
            raise TransportError(f"parent proxy {phost}:{pport}: {type(exc).__name__}") from None
        try:
            target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            transport.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode("latin-1"))
            head = await tunnel.answer
            status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = status_line.split(" ", 2)
            if len(parts) < 2 or parts[1] != "200":
                raise TransportError(f"parent proxy refused {target}: {status_line}")
            if tunnel.extra:
                raise TransportError("parent proxy sent bytes past its answer to CONNECT")
            conn = _Connection(self, origin)
            if tls:
                try:
                    inner = await self.loop.start_tls(transport, conn, self.verify, server_hostname=host)
                except ssl.SSLCertVerificationError as exc:
                    raise TransportError(
                        f"the certificate of {host} failed verification: {exc.verify_message}"
                    ) from None
                except (ssl.SSLError, OSError) as exc:
                    raise TransportError(f"TLS with {host} failed: {type(exc).__name__}") from None
                if inner is None:
                    raise TransportError(f"TLS with {host} failed: the tunnel closed")
                conn.connection_made(inner)  # start_tls does not call it
            else:
                transport.set_protocol(conn)
                conn.connection_made(transport)
        except BaseException:
            transport.close()
            raise
        self.opened += 1
        return conn

    async def _resolve(self, host: str, port: int) -> list[str]:
        try:
            ipaddress.ip_address(host)
            return [host]  # a literal: the URL check judged it
        except ValueError:
            pass
        key = (host, port)
        now = time.monotonic()
        cached = self._dns.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            infos = await self.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise TransportError(f"cannot resolve {host} ({exc})") from None
        addresses = list(dict.fromkeys(str(i[4][0]) for i in infos))
        if not addresses:
            raise TransportError(f"cannot resolve {host}")
        if not self.allow_private:
            for a in addresses:
                ip = ipaddress.ip_address(a)
                if not ip.is_global or ip.is_multicast:
                    raise TransportError(f"{host} resolves to a non-public address; refused")
        self._dns[key] = (now + _DNS_TTL_S, addresses)
        return addresses

    async def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(TransportError("the provider's client is closed"))
        self._waiters.clear()

    def idle_count(self) -> int:
        return sum(len(v) for v in self._idle.values())


def _latin1(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise TransportError("a request header is not latin-1 text") from None
