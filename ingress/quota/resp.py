"""A pipelined Valkey connection for the quota gate's scripts.

Every admitted request makes one EVALSHA.  Through valkey-py's pool that is
a pool checkout (a lock and a condition), a command packed through several
layers, a socket write and a read of its own, and the connection handed
back.  Here every call in flight shares one connection: the commands made
in the same loop iteration go out in one write, the replies come back in
order (Valkey answers one connection's commands in the order it got them)
and resolve the callers' futures first in, first out.  Under load that
turns tens of writes and reads into one of each; alone, a call is one
write and one read as before.

Only what the gate needs: ``register_script(src)`` whose result is awaited
as ``script(keys=[...], args=[...])`` (the shape of valkey-py's, so the gate
takes either), EVALSHA with a reload on NOSCRIPT (a restarted or flushed
server), ``redis://`` / ``valkey://`` / ``rediss://`` URLs with user,
password and database.  A lost connection fails the calls in flight with
``ConnectionError`` (the gate fails closed) and the next call reconnects.

A store that hangs (a stopped process, a black-holed network) keeps the
connection open and answers nothing.  A watchdog notices: calls waiting
and not one byte from the store for ``stall_s`` fail with ``StoreStalled``
at once.  The connection is kept and their reply slots with it, so that
replies that come late still pair with the right calls, and whatever is
queued behind (the gate's releases of reserves it gave up on) runs after
them.  Before judging, the watchdog looks at the socket: bytes waiting
there mean the store answered and it is this process that is slow (its
event loop busy), which is no reason to fail anyone.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import select
import ssl
import time
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import unquote, urlsplit

_CRLF = b"\r\n"


class ReplyError(Exception):
    """An error reply (``-ERR ...``) to one command."""


class StoreStalled(ConnectionError):
    """The store left calls waiting without a byte for ``stall_s``."""


class _Incomplete(Exception):
    pass


def _pack(args: Sequence[bytes | str | int | float]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a.encode() if isinstance(a, str) else a if isinstance(a, bytes) else str(a).encode()
        out += (b"$%d\r\n" % len(b), b, _CRLF)
    return b"".join(out)


def _parse(buf: bytearray, pos: int) -> tuple[Any, int]:
    """One RESP2 reply at ``pos``: (value, position after it); raises
    _Incomplete when the buffer does not hold all of it yet."""
    end = buf.find(_CRLF, pos)
    if end < 0:
        raise _Incomplete
    kind = buf[pos]
    line = bytes(buf[pos + 1 : end])
    if kind == 0x3A:  # ':' integer
        return int(line), end + 2
    if kind == 0x24:  # '$' bulk string
        n = int(line)
        if n < 0:
            return None, end + 2
        if len(buf) < end + 2 + n + 2:
            raise _Incomplete
        return bytes(buf[end + 2 : end + 2 + n]), end + 2 + n + 2
    if kind == 0x2A:  # '*' array
        n = int(line)
        if n < 0:
            return None, end + 2
        items = []
        p = end + 2
        for _ in range(n):
            v, p = _parse(buf, p)
            items.append(v)
        return items, p
    if kind == 0x2B:  # '+' simple string
        return line.decode(), end + 2
    if kind == 0x2D:  # '-' error
        return ReplyError(line.decode(errors="replace")), end + 2
    raise ValueError(f"unexpected RESP type byte {kind!r}")


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.closed = False
        self.heard_at = 0.0  # when the store last sent bytes, or we started waiting on it

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        err = ConnectionError(f"Valkey connection lost ({type(exc).__name__ if exc else 'closed'})")
        while self.waiting:
            fut = self.waiting.popleft()
            if not fut.done():
                fut.set_exception(err)

    def data_received(self, data: bytes) -> None:
        self.heard_at = time.monotonic()
        self.buf += data
        pos = 0
        try:
            while pos < len(self.buf) and self.waiting:
                value, pos = _parse(self.buf, pos)
                fut = self.waiting.popleft()
                if not fut.done():  # a caller that gave up (timeout) leaves its slot
                    fut.set_result(value)
        except _Incomplete:
            pass
        except ValueError:
            if self.transport is not None:
                self.transport.close()  # out of step with the server: start again
            return
        del self.buf[:pos]


def _bytes_waiting(proto: _Protocol) -> bool:
    """Whether the store's bytes sit unread in the socket (this process is
    behind, the store is not)."""
    sock = proto.transport.get_extra_info("socket") if proto.transport is not None else None
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock.fileno()], [], [], 0)
    except (OSError, ValueError):
        return False
    return bool(readable)


class PipelinedScript:
    __slots__ = ("_client", "sha", "src")

    def __init__(self, client: PipelinedValkey, src: str) -> None:
        self._client = client
        self.src = src.encode()
        self.sha = hashlib.sha1(self.src).hexdigest()  # noqa: S324 - the name Valkey gives a script

    async def __call__(self, keys: Sequence[str] = (), args: Sequence[Any] = ()) -> Any:
        head: list[bytes | str | int | float] = ["EVALSHA", self.sha, len(keys), *keys, *args]
        reply = await self._client.execute(head)
        if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
            # The server lost its script cache (restart, SCRIPT FLUSH).
            reply = await self._client.execute(["EVAL", self.src, len(keys), *keys, *args])
        if isinstance(reply, ReplyError):
            raise reply
        return reply


class PipelinedValkey:
    def __init__(self, url: str, *, connect_timeout_s: float = 5.0, stall_s: float = 0.25) -> None:
        u = urlsplit(url)
        if u.scheme not in ("redis", "valkey", "rediss", "valkeys"):
            raise ValueError(f"unsupported Valkey URL scheme {u.scheme!r}")
        self._host = u.hostname or "127.0.0.1"
        self._port = u.port or 6379
        self._tls = u.scheme in ("rediss", "valkeys")
        self._user = unquote(u.username) if u.username else None
        self._password = unquote(u.password) if u.password else None
        path = u.path.strip("/")
        self._db = int(path) if path else 0
        self._connect_timeout = connect_timeout_s
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._pending: list[bytes] = []
        self._flush_scheduled = False
        self.stall_s = stall_s
        self._watchdog: asyncio.TimerHandle | None = None

    @classmethod
    def from_url(cls, url: str) -> PipelinedValkey:
        return cls(url)

    def register_script(self, src: str) -> PipelinedScript:
        return PipelinedScript(self, src)

    async def execute(self, args: Sequence[bytes | str | int | float]) -> Any:
        """One command's reply (a ReplyError is returned, not raised)."""
        proto = self._proto
        if proto is None or proto.closed:
            proto = await self._connect()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if not proto.waiting:
            proto.heard_at = time.monotonic()  # the store's silence counts from now
        proto.waiting.append(fut)
        self._pending.append(_pack(args))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush, proto)
        if self._watchdog is None:
            self._watchdog = loop.call_later(self.stall_s, self._watch, proto)
        return await fut

    def _watch(self, proto: _Protocol) -> None:
        self._watchdog = None
        if proto.closed or not any(not f.done() for f in proto.waiting):
            return  # nobody waits (the next call arms the watchdog again)
        loop = asyncio.get_running_loop()
        quiet = time.monotonic() - proto.heard_at
        if quiet < self.stall_s or _bytes_waiting(proto):
            self._watchdog = loop.call_later(max(self.stall_s - quiet, 0.01), self._watch, proto)
            return
        err = StoreStalled(f"Valkey sent nothing for {quiet:.2f} s with calls waiting")
        for fut in proto.waiting:
            if not fut.done():
                fut.set_exception(err)
        proto.heard_at = time.monotonic()

    def _flush(self, proto: _Protocol) -> None:
        self._flush_scheduled = False
        data, self._pending = b"".join(self._pending), []
        if proto.transport is not None and not proto.closed:
            proto.transport.write(data)
        # else connection_lost has failed every waiter already

    async def _connect(self) -> _Protocol:
        # One connect at a time: callers arriving meanwhile wait for it.
        if self._connecting is not None:
            return await asyncio.shield(self._connecting)
        loop = asyncio.get_running_loop()
        self._connecting = loop.create_future()
        try:
            proto = await self._open()
        except BaseException as exc:
            self._connecting.set_exception(ConnectionError(f"cannot reach Valkey: {type(exc).__name__}"))
            self._connecting.exception()  # retrieved: no "never retrieved" warning
            self._connecting = None
            raise ConnectionError(f"cannot reach Valkey: {type(exc).__name__}") from exc
        self._proto = proto
        self._connecting.set_result(proto)
        self._connecting = None
        return proto

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        ctx = ssl.create_default_context() if self._tls else None
        async with asyncio.timeout(self._connect_timeout):
            _, proto = await loop.create_connection(_Protocol, self._host, self._port, ssl=ctx)
            hello: list[list[bytes | str | int | float]] = []
            if self._password is not None:
                auth: list[bytes | str | int | float] = ["AUTH"]
                if self._user:
                    auth.append(self._user)
                hello.append([*auth, self._password])
            if self._db:
                hello.append(["SELECT", self._db])
            for cmd in hello:
                fut: asyncio.Future[Any] = loop.create_future()
                proto.waiting.append(fut)
                assert proto.transport is not None
                proto.transport.write(_pack(cmd))
                reply = await fut
                if isinstance(reply, ReplyError):
                    proto.transport.close()
                    raise ConnectionError(f"Valkey refused {cmd[0]!s}: {reply}")
        return proto

    async def aclose(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        self._proto = None
