"""Reading a pull consumer: pull requests published by hand, messages
collected as ``(reply subject, payload)`` pairs, at most ``window`` messages
requested or unread at any time (the backpressure a slow store needs:
nothing piles up in the client or the server).

Two readers with the same interface:

* ``WirePuller``: its own plain NATS connection (an asyncio protocol) that
  only subscribes to its inbox and publishes pull requests.  A stream
  message is a control-line split and two slices; its headers (the
  ``Nats-Msg-Id`` every event carries) are not parsed.  nats-py, even
  without ``fetch`` (a task, a ``wait_for`` and a ``uuid4`` per message),
  builds a ``Msg``, parses its headers into a dict and queues it: about a
  quarter of the projector's CPU when catching up.
* ``NatsPyPuller``: the same protocol over the projector's nats-py
  connection, for what the lean one does not speak (TLS, credentials files,
  nkeys).  Slower, never wrong.

Creating, probing and deleting the consumer stays on nats-py.  A lost lean
connection ends the read with an error; the lane then re-creates the
consumer from the stores' checkpoints, as after any NATS trouble.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Protocol, cast

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

# Messages per pull request (~1 MB), and how long a request waits for them.
PULL_CHUNK = 2500
PULL_EXPIRES_S = 10.0
_CONNECT_TIMEOUT_S = 5.0

Delivery = tuple[bytes, bytes]  # ($JS.ACK reply subject, payload)


class ConsumerGone(Exception):
    """The server ended our pull requests for good (consumer deleted, ...)."""


class Puller(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def take(self, wait_s: float) -> list[Delivery]:
        """What has arrived, waiting up to ``wait_s`` when nothing has."""


class _Credit:
    """Pull bookkeeping shared by both readers."""

    def __init__(self, stream: str, consumer: str, window: int) -> None:
        self.subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}".encode()
        self.window = window
        self.chunk = min(PULL_CHUNK, window)
        self.request = json.dumps({"batch": self.chunk, "expires": int(PULL_EXPIRES_S * 1e9)}).encode()
        self.buf: list[Delivery] = []
        self.ready = asyncio.Event()
        self.owed = 0  # messages requested and neither delivered nor expired
        self.requests_end = 0.0  # when the last request sent expires
        self.error: BaseException | None = None

    def requests_due(self) -> int:
        """How many pull requests to send now."""
        now = time.monotonic()
        if self.owed and now > self.requests_end + 1.0:
            self.owed = 0  # every request has expired; their endings were lost (a reconnect)
        n = 0
        while self.owed + len(self.buf) + self.chunk <= self.window:
            self.owed += self.chunk
            n += 1
        if n:
            self.requests_end = now + PULL_EXPIRES_S
        return n

    def delivered(self, item: Delivery) -> None:
        self.buf.append(item)
        self.owed -= 1
        self.ready.set()

    def status(self, code: str, description: str, pending: int | None) -> None:
        if code == "100":  # an idle heartbeat
            return
        # A request ended before it was filled (408 expired, 404 nothing
        # there, 409 the server ended it): its remainder is no longer owed.
        self.owed = max(0, self.owed - (self.chunk if pending is None else pending))
        if code not in ("404", "408"):
            self.error = ConsumerGone(f"pull consumer: {code} {description}".strip())
        self.ready.set()

    async def take(self, wait_s: float) -> list[Delivery]:
        if not self.buf and self.error is None:
            self.ready.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self.ready.wait()
        if self.error is not None:
            raise self.error
        out, self.buf = self.buf, []
        return out


def _status_of(headers: bytes) -> tuple[str, str, int | None]:
    """(code, description, Nats-Pending-Messages) of a status message's
    header block: ``NATS/1.0 408 Request Timeout\\r\\nNats-Pending-Messages: 5``."""
    lines = headers.decode(errors="replace").split("\r\n")
    first = lines[0].split(" ", 2)
    code = first[1] if len(first) > 1 else ""
    description = first[2] if len(first) > 2 else ""
    pending = None
    for line in lines[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == "nats-pending-messages":
            with contextlib.suppress(ValueError):
                pending = int(value.strip())
    return code, description, pending


class WireUnsupported(Exception):
    """The connection needs what the lean reader does not speak."""


def _requires_tls(info: bytes) -> bool:
    return b'"tls_required":true' in info.replace(b" ", b"")


class _WireProtocol(asyncio.Protocol):
    def __init__(self, credit: _Credit, connected: asyncio.Future[None]) -> None:
        self._credit = credit
        self._connected = connected
        self._buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        err = ConnectionError(f"pull connection lost: {exc or 'closed by the server'}")
        if not self._connected.done():
            self._connected.set_exception(err)
        if self._credit.error is None:
            self._credit.error = err
        self._credit.ready.set()

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        credit = self._credit
        pos = 0
        size = len(buf)
        while True:
            end = buf.find(b"\r\n", pos)
            if end < 0:
                break
            op = buf[pos : pos + 4]
            if op == b"HMSG" or op[:3] == b"MSG":
                parts = bytes(buf[pos:end]).split(b" ")
                headers = op == b"HMSG"
                # [H]MSG <subject> <sid> [reply] [<header bytes>] <total bytes>
                reply = parts[3] if len(parts) == (6 if headers else 5) else b""
                total = int(parts[-1])
                head = int(parts[-2]) if headers else 0
                start = end + 2
                if size < start + total + 2:
                    break  # the payload is not all here yet
                if reply:
                    credit.delivered((reply, bytes(buf[start + head : start + total])))
                else:
                    credit.status(*_status_of(bytes(buf[start : start + head])))
                pos = start + total + 2
                continue
            line = bytes(buf[pos:end])
            pos = end + 2
            if line == b"PING":
                assert self.transport is not None
                self.transport.write(b"PONG\r\n")
            elif line == b"PONG":
                if not self._connected.done():
                    self._connected.set_result(None)
            elif line.startswith(b"-ERR"):
                err = ConnectionError(f"NATS: {line[5:].decode(errors='replace').strip()}")
                if not self._connected.done():
                    self._connected.set_exception(err)
                credit.error = err
                credit.ready.set()
            elif line.startswith(b"INFO ") and _requires_tls(line) and not self._connected.done():
                self._connected.set_exception(WireUnsupported("the server requires TLS"))
            # +OK needs nothing
        del buf[:pos]


class WirePuller:
    def __init__(self, nc: NATS, stream: str, consumer: str, *, window: int) -> None:
        self._credit = _Credit(stream, consumer, window)
        self._connect = _connect_line(nc)
        url = nc.connected_url
        assert url is not None and url.hostname
        self._host, self._port = url.hostname, url.port or 4222
        self._inbox = nc.new_inbox().encode()
        self._protocol: _WireProtocol | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        connected: asyncio.Future[None] = loop.create_future()
        async with asyncio.timeout(_CONNECT_TIMEOUT_S):
            _, protocol = await loop.create_connection(
                lambda: _WireProtocol(self._credit, connected), self._host, self._port
            )
            self._protocol = protocol
            assert protocol.transport is not None
            protocol.transport.write(self._connect + b"SUB " + self._inbox + b" 1\r\nPING\r\n")
            await connected

    async def stop(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()

    async def take(self, wait_s: float) -> list[Delivery]:
        credit = self._credit
        due = credit.requests_due()
        if due and self._protocol is not None and self._protocol.transport is not None:
            req = credit.request
            line = b"PUB %s %s %d\r\n%s\r\n" % (credit.subject, self._inbox, len(req), req)
            self._protocol.transport.write(line * due)
        return await credit.take(wait_s)


def _connect_line(nc: NATS) -> bytes:
    """The CONNECT line for a second connection as nc's user, or
    ``WireUnsupported`` for what only nats-py speaks."""
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
        raise WireUnsupported("TLS or credentials the lean reader does not speak")
    connect: dict[str, object] = {
        "verbose": False,
        "pedantic": False,
        "headers": True,
        "no_responders": True,
        "protocol": 1,
        "lang": "python3-nexus-projections",
        "name": f"{opts.get('name') or 'nexus'}-pull",
    }
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
    return b"CONNECT " + json.dumps(connect).encode() + b"\r\n"


class NatsPyPuller:
    def __init__(self, nc: NATS, stream: str, consumer: str, *, window: int) -> None:
        self._nc = nc
        self._credit = _Credit(stream, consumer, window)
        self._inbox = nc.new_inbox()
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_msg)

    async def stop(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.unsubscribe()

    async def _on_msg(self, msg: Msg) -> None:
        if msg.reply:  # a stream message: its reply subject is its $JS.ACK metadata
            self._credit.delivered((msg.reply.encode(), msg.data))
            return
        headers = msg.headers or {}
        pending = headers.get("Nats-Pending-Messages")
        self._credit.status(
            headers.get("Status", ""), headers.get("Description", ""), int(pending) if pending else None
        )

    async def take(self, wait_s: float) -> list[Delivery]:
        credit = self._credit
        for _ in range(credit.requests_due()):
            await self._nc.publish(credit.subject.decode(), credit.request, reply=self._inbox)
        return await credit.take(wait_s)


async def open_puller(nc: NATS, stream: str, consumer: str, *, window: int) -> Puller:
    """A started reader: the lean one when it can speak to this server,
    else nats-py's."""
    try:
        wire = WirePuller(nc, stream, consumer, window=window)
        try:
            await wire.start()
        except BaseException:
            await wire.stop()
            raise
        return wire
    except WireUnsupported:
        puller = NatsPyPuller(nc, stream, consumer, window=window)
        await puller.start()
        return puller
