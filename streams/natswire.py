"""The one NATS wire core: the client protocol spoken by hand for the two
paths where nats-py costs as much as the work itself.

* Publishing (``AckWriter``, used by ``streams.publisher``): a batch of
  events is one ``bytes.join`` and one ``write``; each JetStream ack is a
  line split and a substring check.  nats-py's ``publish_async`` takes a
  semaphore, creates a future with a done-callback, encodes headers
  through a dict and hands every ack back as a ``Msg`` through a queue and
  ``json.loads``: about a fifth of the gateway's CPU at peak.
* Reading pull consumers (``streams.pull``, used by ``streams.consumer``):
  a stream message is a control-line split and two slices; nats-py builds a
  ``Msg``, parses its headers into a dict and queues it, about a quarter of
  the projector's CPU when catching up.

Both sit on ``WireProtocol`` (server-to-client parsing: INFO, PING/PONG,
-ERR, MSG and HMSG) and ``open_wire`` (connect, CONNECT, a first PING/PONG
round trip that proves authentication and subscriptions).  Scope:
plaintext ``nats://`` servers with user/password or token credentials.  A
server that requires TLS, a ``tls://`` URL, credentials files or nkeys raise
``WireUnsupported`` and the caller uses nats-py for that connection: slower,
never wrong.  Management (streams, consumers, KV) always stays on nats-py.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast
from urllib.parse import unquote, urlsplit

from nats.aio.client import Client as NATS

log = logging.getLogger("nexus.natswire")

_CRLF = b"\r\n"


class WireUnsupported(Exception):
    """This server or client setup needs what the lean connection does not
    speak (TLS, credentials files, nkeys, callable credentials)."""


class WireClosed(ConnectionError):
    pass


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to connect and the CONNECT options to send."""

    host: str
    port: int
    options: dict[str, object] = field(default_factory=dict)

    def connect_line(self) -> bytes:
        return b"CONNECT " + json.dumps(self.options, separators=(",", ":")).encode() + _CRLF


def _base_options(name: str) -> dict[str, object]:
    return {
        "verbose": False,
        "pedantic": False,
        "headers": True,
        "no_responders": True,
        "protocol": 1,
        "lang": "python-nexus",
        "version": "1",
        "name": name,
    }


def endpoints_from_url(url: str, name: str) -> list[Endpoint]:
    """One endpoint per server of ``url`` (comma-separated), credentials
    from the URL; ``WireUnsupported`` for a TLS scheme."""
    out = []
    for one in (s.strip() for s in url.split(",") if s.strip()):
        u = urlsplit(one if "://" in one else f"nats://{one}")
        if u.scheme not in ("nats", ""):
            raise WireUnsupported(f"scheme {u.scheme}")
        opts = _base_options(name)
        if u.username and u.password is not None:
            opts["user"], opts["pass"] = unquote(u.username), unquote(u.password)
        elif u.username:
            opts["auth_token"] = unquote(u.username)
        out.append(Endpoint(u.hostname or "127.0.0.1", u.port or 4222, opts))
    if not out:
        raise OSError("no NATS server given")
    return out


def endpoint_like(nc: NATS, name: str) -> Endpoint:
    """A second connection to the server ``nc`` is connected to, as the same
    user; ``WireUnsupported`` for what only nats-py speaks."""
    url = nc.connected_url
    opts = nc.options
    if (
        url is None
        or url.scheme != "nats"
        or not url.hostname
        or opts.get("tls")
        or getattr(nc, "_user_credentials", None) is not None
        or getattr(nc, "_nkeys_seed", None) is not None
        or getattr(nc, "_nkeys_seed_str", None) is not None
        or getattr(nc, "_signature_cb", None) is not None
    ):
        raise WireUnsupported("TLS or credentials the lean connection does not speak")
    connect = _base_options(name)
    user, password, token = opts.get("user"), opts.get("password"), opts.get("token")
    if any(callable(v) for v in (user, password, token)):
        raise WireUnsupported("callable credentials")
    if user is not None and password is not None:
        connect.update(user=user, **{"pass": password})
    elif token is not None:
        connect["auth_token"] = token
    elif url.username is not None:
        if url.password is None:
            connect["auth_token"] = url.username
        else:
            connect.update(user=url.username, **{"pass": url.password})
    return Endpoint(url.hostname, url.port or 4222, connect)


class WireProtocol(asyncio.Protocol):
    """The server-to-client half of the NATS protocol.  Subclasses get every
    MSG/HMSG in ``message`` and a lost connection in ``lost``."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.server_info: dict[str, Any] = {}  # the server's INFO, once connected
        self.closed = False
        self.error = ""
        self._buf = bytearray()
        loop = asyncio.get_running_loop()
        self.info: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._pongs: deque[asyncio.Future[None]] = deque()

    # --- for subclasses ---------------------------------------------------

    def message(self, subject: bytes, headers: bytes, payload: bytes) -> None:
        """One MSG (``headers`` empty) or HMSG (the raw header block)
        without a reply subject: a request's answer, a status."""

    def stream_message(
        self, subject: bytes, reply: bytes, buf: bytearray, start: int, head: int, total: int
    ) -> None:
        """One message with a reply subject (a stream message delivered to a
        consumer): its header block is ``buf[start:start + head]``, its
        payload ``buf[start + head:start + total]``.  The buffer and offsets
        rather than copies: this runs for every event a consumer reads, and
        most never need their headers."""

    def lost(self, err: WireClosed) -> None:
        """The connection is gone (``err`` says why)."""

    def refused(self, text: str) -> None:
        """The server answered -ERR (it closes the connection after most)."""

    # --- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        err = WireClosed(self.error or (f"{type(exc).__name__}: {exc}" if exc else "closed by the server"))
        if not self.info.done():
            self.info.set_exception(err)
        while self._pongs:
            fut = self._pongs.popleft()
            if not fut.done():
                fut.set_exception(err)
        self.lost(err)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        try:
            self._parse()
        except ValueError as exc:  # a protocol line we cannot read: start again
            log.warning("NATS protocol error: %s", exc)
            self.error = f"protocol error: {exc}"
            self.close()

    # --- use ----------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            raise WireClosed(self.error or "the connection is closed")
        self.transport.write(data)

    def ping(self) -> asyncio.Future[None]:
        """A future set by the server's PONG: everything written before it
        has been processed by the server."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pongs.append(fut)
        self.write(b"PING\r\n")
        return fut

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # --- parsing --------------------------------------------------------

    def _parse(self) -> None:
        buf = self._buf
        pos = 0
        size = len(buf)
        message = self.message
        stream_message = self.stream_message
        while True:
            end = buf.find(_CRLF, pos)
            if end < 0:
                break
            op = buf[pos : pos + 4]
            if op == b"HMSG" or op[:3] == b"MSG":
                parts = bytes(buf[pos:end]).split(b" ")
                hmsg = op == b"HMSG"
                # [H]MSG <subject> <sid> [reply] [<header bytes>] <total bytes>
                reply = parts[3] if len(parts) == (6 if hmsg else 5) else b""
                total = int(parts[-1])
                head = int(parts[-2]) if hmsg else 0
                start = end + 2
                if size < start + total + 2:
                    break  # the payload is not all here yet
                if reply:
                    stream_message(parts[1], reply, buf, start, head, total)
                else:
                    message(
                        parts[1],
                        bytes(buf[start : start + head]) if head else b"",
                        bytes(buf[start + head : start + total]),
                    )
                pos = start + total + 2
                continue
            line = bytes(buf[pos:end])
            pos = end + 2
            if line == b"PING":
                if self.transport is not None:
                    self.transport.write(b"PONG\r\n")
            elif line == b"PONG":
                if self._pongs:
                    fut = self._pongs.popleft()
                    if not fut.done():
                        fut.set_result(None)
            elif line.startswith(b"INFO "):
                if not self.info.done():
                    self.info.set_result(json.loads(line[5:]))
            elif line.startswith(b"-ERR"):
                self.error = line[5:].decode(errors="replace").strip(" '")
                self.refused(self.error)
            # +OK: verbose mode is off; anything else is ignored
        del buf[:pos]


_P = TypeVar("_P", bound=WireProtocol)


async def open_wire(
    factory: Callable[[], _P],
    endpoint: Endpoint,
    *,
    setup: bytes = b"",
    timeout: float = 5.0,  # noqa: ASYNC109
) -> _P:
    """Connect, check INFO (``WireUnsupported`` when the server requires
    TLS), send CONNECT and ``setup`` (subscriptions), and wait for the PONG
    that proves the server accepted them."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        _, proto = await loop.create_connection(factory, endpoint.host, endpoint.port)
        try:
            info = await proto.info
            if info.get("tls_required"):
                raise WireUnsupported("the server requires TLS")
            proto.write(endpoint.connect_line() + setup)
            await proto.ping()
        except BaseException:
            proto.close()
            raise
    proto.server_info = info
    return proto


# --- publishing: a batch to JetStream, acks counted in order ---------------

Row = tuple[str, str, bytes]  # subject, Nats-Msg-Id, payload


@dataclass(frozen=True, slots=True)
class Refusal:
    """JetStream (or the server) refused a message: why, and whether trying
    again can ever succeed."""

    reason: str
    permanent: bool


class _Batch:
    __slots__ = ("answered", "base", "done", "failed_at", "n", "ok", "refusals")

    def __init__(self, base: int, n: int) -> None:
        self.base = base
        self.n = n
        self.ok = bytearray(n)  # 1 = stored
        self.answered = 0
        self.failed_at = n  # the first index JetStream refused
        self.refusals: dict[int, Refusal] = {}
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def ack(self, i: int, stored: bool) -> None:
        if stored:
            self.ok[i] = 1
        elif i < self.failed_at:
            self.failed_at = i
        self.answered += 1
        if self.done.done():
            return
        # Done when every message answered, or when everything before the
        # first refusal did (nothing after it can extend the stored prefix).
        if self.answered >= self.n or (self.failed_at < self.n and self.ok.find(0, 0, self.failed_at) < 0):
            self.done.set_result(None)

    def stored_prefix(self) -> int:
        first_missing = self.ok.find(0, 0, self.failed_at)
        return self.failed_at if first_missing < 0 else first_missing


class _AckProtocol(WireProtocol):
    """JetStream's answer to each message is a JSON PubAck on the reply
    subject: ``{"stream": ..., "seq": n}`` (``"duplicate": true`` when the
    ``Nats-Msg-Id`` was already stored: a success), or ``{"error": {...}}``;
    a status header (503: no stream listens on the subject) is a refusal."""

    def __init__(self, inbox: bytes) -> None:
        super().__init__()
        self.inbox = inbox
        self.batch: _Batch | None = None

    def lost(self, err: WireClosed) -> None:
        if self.batch is not None and not self.batch.done.done():
            self.batch.done.set_result(None)  # what was acked stays acked

    def refused(self, text: str) -> None:
        log.warning("NATS refused the publishing connection's command: %s", text)

    def message(self, subject: bytes, headers: bytes, payload: bytes) -> None:
        batch = self.batch
        if batch is None or not subject.startswith(self.inbox):
            return
        try:
            i = int(subject[len(self.inbox) :]) - batch.base
        except ValueError:
            return
        if not 0 <= i < batch.n:
            return  # an ack of an earlier batch that timed out
        stored = not headers.startswith(b"NATS/1.0 ") and b'"error"' not in payload
        if not stored:
            why = (headers or payload)[:200].decode(errors="replace").replace("\r\n", " ")
            log.warning("JetStream refused an event: %s", why)
            # A 503 (no stream listens on the subject) may pass once the
            # stream exists again; an API error about the message will not.
            batch.refusals[i] = Refusal(why, permanent=not headers.startswith(b"NATS/1.0 503"))
        batch.ack(i, stored)


class AckWriter:
    """A plaintext NATS connection that publishes batches to JetStream and
    reports how many were stored, in order.  Not shared: one batch at a
    time (the publisher's flusher is its only user)."""

    def __init__(self, proto: _AckProtocol, max_payload: int) -> None:
        self._p = proto
        self._seq = 0
        self.max_payload = max_payload
        # After ``publish``: why the first row not stored was refused (None
        # for a timeout or a lost connection).
        self.refused: Refusal | None = None

    @classmethod
    async def open(cls, url: str, *, name: str, timeout: float = 2.0) -> AckWriter:  # noqa: ASYNC109
        """Connect to the first of ``url`` (comma-separated servers) that
        answers; raises ``WireUnsupported`` for a TLS server, ``OSError`` /
        ``WireClosed`` / ``TimeoutError`` when none answers."""
        import secrets

        last: Exception = OSError("no NATS server given")
        for endpoint in endpoints_from_url(url, name):
            inbox = f"_INBOX.{secrets.token_hex(11)}.".encode()
            try:
                proto = await open_wire(
                    lambda inbox=inbox: _AckProtocol(inbox),  # type: ignore[misc]
                    endpoint,
                    setup=b"SUB " + inbox + b"* 1\r\n",
                    timeout=timeout,
                )
            except WireUnsupported:
                raise
            except (OSError, TimeoutError, ValueError) as exc:
                last = exc
                continue
            raw_max = proto.server_info.get("max_payload", 1024 * 1024)
            return cls(proto, raw_max if isinstance(raw_max, int) else 1024 * 1024)
        raise last

    @property
    def closed(self) -> bool:
        return self._p.closed

    def close(self) -> None:
        self._p.close()

    async def publish(self, rows: list[Row] | tuple[Row, ...], timeout: float) -> int:  # noqa: ASYNC109
        """Publish ``rows`` in one write; return how many, from the start,
        JetStream acknowledged within ``timeout``."""
        p = self._p
        if p.closed or p.transport is None:
            raise WireClosed("the publishing connection is closed")
        if not rows:
            return 0
        base = self._seq + 1
        self._seq += len(rows)
        batch = _Batch(base, len(rows))
        parts: list[bytes] = []
        inbox = p.inbox
        for i, (subject, msg_id, data) in enumerate(rows):
            hdr = b"NATS/1.0\r\nNats-Msg-Id: " + msg_id.encode() + b"\r\n\r\n"
            if len(hdr) + len(data) > self.max_payload:
                # Stop before it: the server would close the connection.
                log.warning("an event of %d bytes exceeds the server's max_payload", len(data))
                batch.n = i
                batch.failed_at = i
                del batch.ok[i:]
                self.refused = Refusal(
                    f"{len(data)} bytes, over the server's max_payload of {self.max_payload}", permanent=True
                )
                break
            parts.append(
                b"HPUB %s %s%d %d %d\r\n"
                % (subject.encode(), inbox, base + i, len(hdr), len(hdr) + len(data))
            )
            parts.append(hdr)
            parts.append(data)
            parts.append(_CRLF)
        if batch.n == 0:
            return 0
        oversized, self.refused = self.refused, None
        p.batch = batch
        try:
            p.write(b"".join(parts))
            try:
                async with asyncio.timeout(timeout):
                    await batch.done
            except TimeoutError:
                pass
        finally:
            p.batch = None
        stored = batch.stored_prefix()
        # Why the stored prefix ends where it does, when JetStream said so.
        self.refused = batch.refusals.get(stored) or (oversized if stored == batch.n else None)
        return stored
