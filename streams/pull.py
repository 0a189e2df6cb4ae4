"""Reading a pull consumer: pull requests published by hand, messages
collected as ``Msg``, at most ``window`` messages requested or unread at any
time (the backpressure a slow consumer needs: nothing piles up in the client
or the server).  Acknowledgements go back on the same connection.

Two readers with one interface:

* ``WirePuller``: its own plain NATS connection (``streams.natswire``) that
  only subscribes to its inbox, publishes pull requests and acks.
* ``NatsPyPuller``: the same protocol over a nats-py connection, for what
  the wire core does not speak (TLS, credentials files, nkeys).

``open_puller`` picks the first that works.  Creating, probing and deleting
the consumer is ``streams.consumer``'s job (on nats-py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Protocol

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg as NatsPyMsg
from nats.aio.subscription import Subscription

from streams.natswire import WireClosed, WireProtocol, WireUnsupported, endpoint_like, open_wire

# Messages per pull request (~1 MB), and how long a request waits for them.
PULL_CHUNK = 2500
PULL_EXPIRES_S = 10.0
_CONNECT_TIMEOUT_S = 5.0

# A message a dead-letter re-drive put back on its stream names the one
# consumer it is for (streams.deadletter); every other consumer passes it.
REDRIVE_HEADER = "Nexus-Redrive-For"
_REDRIVE = REDRIVE_HEADER.encode()

# Acknowledgement bodies (JetStream's ack protocol).
ACK = b""
NAK = b"-NAK"
PROGRESS = b"+WPI"
TERM = b"+TERM"


class ConsumerGone(Exception):
    """The server ended our pull requests for good (consumer deleted, ...)."""


class Msg(msgspec.Struct, frozen=True, gc=False):
    """One stream message as a consumer sees it: its subject, its ack
    subject (``reply``), its payload, the consumer a re-drive is meant for
    ("" for every other message) and its stream sequence.  A Struct, not a
    class with ``__init__``: one is built for every event read."""

    subject: bytes
    reply: bytes
    data: bytes
    redrive_for: str = ""
    seq: int = 0

    @classmethod
    def of(cls, subject: bytes, reply: bytes, data: bytes, redrive_for: str = "") -> Msg:
        return cls(subject, reply, data, redrive_for, seq_of(reply))

    def _token(self, short: int, long: int) -> int:
        tokens = self.reply.split(b".")
        return int(tokens[short] if len(tokens) == 9 else tokens[long])

    @property
    def delivered(self) -> int:
        """How many times JetStream has delivered it (1 the first time)."""
        return self._token(4, 6)

    @property
    def pending(self) -> int:
        """Messages left for the consumer after this one."""
        return self._token(8, 10)


def seq_of(reply: bytes) -> int:
    """The stream sequence from an ack subject
    (``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>``,
    or the 11/12-token form with domain and account hash after ``ACK``),
    without nats-py's Metadata, which also parses a timestamp."""
    tokens = reply.split(b".", 7)
    if len(tokens) == 8:
        if tokens[7].count(b".") == 1:
            return int(tokens[5])
        if tokens[0] == b"$JS":
            return int(tokens[7].split(b".", 1)[0])
    raise ValueError(f"not a JetStream reply subject: {reply!r}")


# A re-drive's Nats-Msg-Id starts with this, and it is the first header
# (streams.deadletter puts it there): one ``startswith`` per message tells
# a re-drive from an event, without searching the header block.
REDRIVE_ID_PREFIX = "redrive:"
_FIRST_ID = len(b"NATS/1.0\r\nNats-Msg-Id: ")
_REDRIVE_ID = REDRIVE_ID_PREFIX.encode()


def redrive_target(headers: bytes) -> str:
    """The consumer a re-driven message is for, from a raw header block."""
    at = headers.find(_REDRIVE)
    if at < 0:
        return ""
    end = headers.find(b"\r\n", at)
    value = headers[at + len(_REDRIVE) : end if end >= 0 else len(headers)]
    return value.lstrip(b": ").strip().decode(errors="replace")


class Puller(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def take(self, wait_s: float) -> list[Msg]:
        """What has arrived, waiting up to ``wait_s`` when nothing has."""

    async def acknowledge(self, replies: list[bytes], body: bytes = ACK) -> None:
        """Send ``body`` (ACK, NAK, PROGRESS, TERM) to each reply subject."""


class _Credit:
    """Pull bookkeeping shared by both readers."""

    def __init__(self, stream: str, consumer: str, window: int) -> None:
        self.subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}".encode()
        self.window = window
        self.chunk = min(PULL_CHUNK, window)
        self.request = json.dumps({"batch": self.chunk, "expires": int(PULL_EXPIRES_S * 1e9)}).encode()
        self.buf: list[Msg] = []
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

    def delivered(self, msg: Msg) -> None:
        self.buf.append(msg)
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

    async def take(self, wait_s: float) -> list[Msg]:
        if not self.buf and self.error is None:
            self.ready.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self.ready.wait()
        if self.error is not None:
            raise self.error
        out, self.buf = self.buf, []
        return out


def status_of(headers: bytes) -> tuple[str, str, int | None]:
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


class _PullProtocol(WireProtocol):
    def __init__(self, credit: _Credit) -> None:
        super().__init__()
        self._credit = credit

    def data_received(self, data: bytes) -> None:
        credit = self._credit
        before = len(credit.buf)
        super().data_received(data)
        if len(credit.buf) != before:
            credit.ready.set()  # once per read, not per message

    def stream_message(
        self, subject: bytes, reply: bytes, buf: bytearray, start: int, head: int, total: int
    ) -> None:
        credit = self._credit
        # Every event carries a Nats-Msg-Id header; a re-drive's says so.
        target = ""
        if buf.startswith(_REDRIVE_ID, start + _FIRST_ID):
            target = redrive_target(bytes(buf[start : start + head]))
        # seq_of, inlined: this runs for every event read.
        tokens = reply.split(b".", 7)
        seq = int(tokens[5]) if tokens[7].count(b".") == 1 else seq_of(reply)
        credit.buf.append(Msg(subject, reply, bytes(buf[start + head : start + total]), target, seq))
        credit.owed -= 1

    def message(self, subject: bytes, headers: bytes, payload: bytes) -> None:
        self._credit.status(*status_of(headers))

    def lost(self, err: WireClosed) -> None:
        if self._credit.error is None:
            self._credit.error = ConnectionError(f"pull connection lost: {err}")
        self._credit.ready.set()

    def refused(self, text: str) -> None:
        self._credit.error = ConnectionError(f"NATS: {text}")
        self._credit.ready.set()


class WirePuller:
    def __init__(self, nc: NATS, stream: str, consumer: str, *, window: int) -> None:
        self._credit = _Credit(stream, consumer, window)
        self._endpoint = endpoint_like(nc, f"{nc.options.get('name') or 'nexus'}-pull")
        self._inbox = nc.new_inbox().encode()
        self._protocol: _PullProtocol | None = None

    async def start(self) -> None:
        credit = self._credit
        self._protocol = await open_wire(
            lambda: _PullProtocol(credit),
            self._endpoint,
            setup=b"SUB " + self._inbox + b" 1\r\n",
            timeout=_CONNECT_TIMEOUT_S,
        )

    async def stop(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.close()

    async def take(self, wait_s: float) -> list[Msg]:
        credit = self._credit
        due = credit.requests_due()
        if due and self._protocol is not None and not self._protocol.closed:
            req = credit.request
            self._protocol.write(
                b"PUB %s %s %d\r\n%s\r\n" % (credit.subject, self._inbox, len(req), req) * due
            )
        return await credit.take(wait_s)

    async def acknowledge(self, replies: list[bytes], body: bytes = ACK) -> None:
        if not replies:
            return
        if self._protocol is None:
            raise WireClosed("the pull connection is closed")
        tail = b" %d\r\n%s\r\n" % (len(body), body)
        self._protocol.write(b"".join(b"PUB " + r + tail for r in replies))


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
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _on_msg(self, msg: NatsPyMsg) -> None:
        if msg.reply:  # a stream message: its reply subject is its $JS.ACK metadata
            headers = msg.headers or {}
            self._credit.delivered(
                Msg.of(msg.subject.encode(), msg.reply.encode(), msg.data, headers.get(REDRIVE_HEADER, ""))
            )
            return
        headers = msg.headers or {}
        pending = headers.get("Nats-Pending-Messages")
        self._credit.status(
            headers.get("Status", ""), headers.get("Description", ""), int(pending) if pending else None
        )

    async def take(self, wait_s: float) -> list[Msg]:
        credit = self._credit
        for _ in range(credit.requests_due()):
            await self._nc.publish(credit.subject.decode(), credit.request, reply=self._inbox)
        return await credit.take(wait_s)

    async def acknowledge(self, replies: list[bytes], body: bytes = ACK) -> None:
        for r in replies:
            await self._nc.publish(r.decode(), body)


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
