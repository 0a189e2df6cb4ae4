"""A lean JetStream publishing connection: one socket write per batch, acks
matched by a counter in the reply subject.

Why not nats-py's ``publish_async``: per message it takes a semaphore,
creates a future with a done-callback, encodes headers through a dict and
goes through the client's pending-buffer machinery, and every ack comes
back through a Msg object, a subscription queue and ``json.loads``.  At the
nine events a request with compliance hooks emits, that was about a fifth
of the gateway's CPU at peak.  Here a batch is one ``bytes.join`` and one
``write``; an ack is a line split and a substring check.

Scope: plaintext ``nats://`` servers, user/password or token in the URL.
A server that requires TLS (or a ``tls://`` URL) raises
``WireUnsupported`` at ``open`` and the publisher keeps using nats-py for
that connection: slower, never wrong.  Management (creating streams,
reconnect notices) stays on nats-py too.

JetStream's answer to each message is a JSON PubAck on the reply subject:
``{"stream": ..., "seq": n}`` (``"duplicate": true`` when the
``Nats-Msg-Id`` was already stored: the message is there, so that is a
success), or ``{"error": {...}}``; a 503 status header means no stream
listens on the subject.  Any of those failures, a lost connection or a
timeout ends the batch: ``publish`` returns how many messages from the
start were stored, and the caller keeps the rest (the outbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Sequence
from typing import cast
from urllib.parse import unquote, urlsplit

log = logging.getLogger("nexus.publisher")

Row = tuple[str, str, bytes]  # subject, Nats-Msg-Id, payload

_CRLF = b"\r\n"


class WireUnsupported(Exception):
    """This server needs what the lean connection does not speak (TLS)."""


class WireClosed(ConnectionError):
    pass


class _Batch:
    __slots__ = ("answered", "base", "done", "failed_at", "n", "ok")

    def __init__(self, base: int, n: int) -> None:
        self.base = base
        self.n = n
        self.ok = bytearray(n)  # 1 = stored
        self.answered = 0
        self.failed_at = n  # the first index JetStream refused
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


class _Protocol(asyncio.Protocol):
    def __init__(self, inbox: bytes) -> None:
        self.inbox = inbox
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.info: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        self.pongs: list[asyncio.Future[None]] = []
        self.batch: _Batch | None = None
        self.closed = False
        self.error = ""

    # --- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        err = WireClosed(self.error or (type(exc).__name__ if exc else "closed by the server"))
        if not self.info.done():
            self.info.set_exception(err)
        for fut in self.pongs:
            if not fut.done():
                fut.set_exception(err)
        self.pongs.clear()
        if self.batch is not None and not self.batch.done.done():
            self.batch.done.set_result(None)  # what was acked stays acked

    def data_received(self, data: bytes) -> None:
        self.buf += data
        try:
            self._parse()
        except ValueError as exc:  # a protocol line we cannot read: start again
            log.warning("NATS protocol error on the publishing connection: %s", exc)
            if self.transport is not None:
                self.transport.close()

    # --- the NATS protocol (server to client) ---------------------------

    def _parse(self) -> None:
        buf = self.buf
        pos = 0
        while True:
            end = buf.find(_CRLF, pos)
            if end < 0:
                break
            op = bytes(buf[pos : pos + 4]).upper()
            if op in (b"MSG ", b"HMSG"):
                head = bytes(buf[pos:end]).split()
                total = int(head[-1])
                body_end = end + 2 + total
                if len(buf) < body_end + 2:
                    break  # the rest of the message has not arrived
                hdr_len = int(head[-2]) if op == b"HMSG" else 0
                payload = bytes(buf[end + 2 + hdr_len : body_end])
                headers = bytes(buf[end + 2 : end + 2 + hdr_len]) if hdr_len else b""
                self._on_msg(head[1], headers, payload)
                pos = body_end + 2
                continue
            line = bytes(buf[pos:end])
            pos = end + 2
            if line == b"PING":
                if self.transport is not None:
                    self.transport.write(b"PONG\r\n")
            elif line == b"PONG":
                if self.pongs:
                    fut = self.pongs.pop(0)
                    if not fut.done():
                        fut.set_result(None)
            elif line.startswith(b"INFO "):
                if not self.info.done():
                    self.info.set_result(json.loads(line[5:]))
            elif line.startswith(b"-ERR"):
                self.error = line[5:].decode(errors="replace").strip(" '")
                log.warning("NATS refused the publishing connection's command: %s", self.error)
            # +OK: verbose mode is off; anything else is ignored
        del buf[:pos]

    def _on_msg(self, subject: bytes, headers: bytes, payload: bytes) -> None:
        batch = self.batch
        if batch is None or not subject.startswith(self.inbox):
            return
        try:
            i = int(subject[len(self.inbox) :]) - batch.base
        except ValueError:
            return
        if not 0 <= i < batch.n:
            return  # an ack of an earlier batch that timed out
        # A status header (503 no responders, 408/409) is a refusal; so is
        # an API error in the body.
        stored = not headers.startswith(b"NATS/1.0 ") and b'"error"' not in payload
        if not stored:
            log.warning(
                "JetStream refused an event: %s",
                (headers or payload)[:200].decode(errors="replace").replace("\r\n", " "),
            )
        batch.ack(i, stored)


def _connect_options(url: str, name: str) -> tuple[str, int, dict[str, object]]:
    u = urlsplit(url if "://" in url else f"nats://{url}")
    if u.scheme not in ("nats", ""):
        raise WireUnsupported(f"scheme {u.scheme}")
    opts: dict[str, object] = {
        "verbose": False,
        "pedantic": False,
        "headers": True,
        "no_responders": True,
        "protocol": 1,
        "lang": "python-nexus",
        "version": "1",
        "name": name,
    }
    if u.username and u.password is not None:
        opts["user"], opts["pass"] = unquote(u.username), unquote(u.password)
    elif u.username:
        opts["auth_token"] = unquote(u.username)
    return u.hostname or "127.0.0.1", u.port or 4222, opts


class AckWriter:
    """A plaintext NATS connection that publishes batches to JetStream and
    reports how many were stored, in order.  Not shared: one batch at a
    time (the publisher's flusher is its only user)."""

    def __init__(self, proto: _Protocol, max_payload: int) -> None:
        self._p = proto
        self._seq = 0
        self.max_payload = max_payload

    @classmethod
    async def open(cls, url: str, *, name: str, timeout: float = 2.0) -> AckWriter:  # noqa: ASYNC109
        """Connect to the first of ``url`` (comma-separated servers) that
        answers; raises ``WireUnsupported`` for a TLS server, ``OSError`` /
        ``WireClosed`` / ``TimeoutError`` when none answers."""
        last: Exception = OSError("no NATS server given")
        for one in (s.strip() for s in url.split(",") if s.strip()):
            try:
                return await cls._open_one(one, name=name, timeout=timeout)
            except WireUnsupported:
                raise
            except (OSError, TimeoutError, ValueError) as exc:
                last = exc
        raise last

    @classmethod
    async def _open_one(cls, url: str, *, name: str, timeout: float) -> AckWriter:  # noqa: ASYNC109
        host, port, opts = _connect_options(url, name)
        loop = asyncio.get_running_loop()
        inbox = f"_INBOX.{secrets.token_hex(11)}.".encode()
        async with asyncio.timeout(timeout):
            transport, proto = await loop.create_connection(lambda: _Protocol(inbox), host, port)
            try:
                info = await proto.info
                if info.get("tls_required"):
                    raise WireUnsupported("the server requires TLS")
                pong = loop.create_future()
                proto.pongs.append(pong)
                transport.write(
                    b"CONNECT "
                    + json.dumps(opts, separators=(",", ":")).encode()
                    + b"\r\nSUB "
                    + inbox
                    + b"* 1\r\nPING\r\n"
                )
                await pong  # the server accepted CONNECT (auth) and the SUB
            except BaseException:
                transport.close()
                raise
        raw_max = info.get("max_payload", 1024 * 1024)
        return cls(proto, raw_max if isinstance(raw_max, int) else 1024 * 1024)

    @property
    def closed(self) -> bool:
        return self._p.closed

    def close(self) -> None:
        if self._p.transport is not None:
            self._p.transport.close()

    async def publish(self, rows: Sequence[Row], timeout: float) -> int:  # noqa: ASYNC109
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
        p.batch = batch
        try:
            p.transport.write(b"".join(parts))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await batch.done
        finally:
            p.batch = None
        return batch.stored_prefix()
