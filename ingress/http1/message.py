"""What a parsed HTTP/1.1 message carries, and the bits of wire syntax both
sides share."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

# Hop-by-hop headers (RFC 9110 7.6.1): they describe one connection and are
# never forwarded, nor copied from a handler's headers into our framing.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

REASONS: dict[int, str] = {
    100: "Continue",
    101: "Switching Protocols",
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    206: "Partial Content",
    301: "Moved Permanently",
    302: "Found",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    413: "Content Too Large",
    417: "Expectation Failed",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    451: "Unavailable For Legal Reasons",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class Headers:
    """An ordered multi-map with case-insensitive lookup.  Values are
    latin-1 text (HTTP/1.1 header bytes round-trip through it unchanged)."""

    __slots__ = ("items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self.items: list[tuple[str, str]] = list(items)

    def get(self, name: str, default: str | None = None) -> str | None:
        n = name.lower()
        for k, v in self.items:
            if k.lower() == n:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        n = name.lower()
        return [v for k, v in self.items if k.lower() == n]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def add(self, name: str, value: str) -> None:
        self.items.append((name, value))

    def set(self, name: str, value: str) -> None:
        self.remove(name)
        self.items.append((name, value))

    def remove(self, name: str) -> None:
        n = name.lower()
        self.items = [(k, v) for k, v in self.items if k.lower() != n]

    def without_hop_by_hop(self) -> Headers:
        # Headers named in Connection are hop-by-hop for this message too.
        named = {t.strip().lower() for v in self.get_all("connection") for t in v.split(",")}
        drop = HOP_BY_HOP | named
        return Headers((k, v) for k, v in self.items if k.lower() not in drop)

    def encode(self) -> bytes:
        return b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in self.items)

    def __repr__(self) -> str:
        return f"Headers({[k for k, _ in self.items]})"


class Disconnect:
    """Set when the client goes away while its request is served: what an
    ``asyncio.Event`` offers a handler (``is_set``, ``wait``) plus callbacks,
    so a handler can have its own task cancelled instead of running its
    work in a second task beside a third that waits for the event (two
    tasks and an ``asyncio.wait`` per request), and without the deque an
    Event allocates for every request."""

    __slots__ = ("_callbacks", "_set")

    def __init__(self) -> None:
        self._set = False
        self._callbacks: list[Callable[[], object]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        callbacks, self._callbacks = self._callbacks, None
        for callback in callbacks or ():
            callback()

    def add_callback(self, callback: Callable[[], object]) -> None:
        """``callback()`` when the client goes away (at once if it has)."""
        if self._set:
            callback()
            return
        if self._callbacks is None:
            self._callbacks = []
        self._callbacks.append(callback)

    def remove_callback(self, callback: Callable[[], object]) -> None:
        if self._callbacks is not None and callback in self._callbacks:
            self._callbacks.remove(callback)

    async def wait(self) -> None:
        if self._set:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not done.done():
                done.set_result(None)

        self.add_callback(wake)
        await done


class Request:
    """One request as the server side parsed it.  ``disconnected`` is set
    when the client goes away while the request is being served."""

    __slots__ = (
        "body",
        "disconnected",
        "headers",
        "keep_alive",
        "method",
        "peer",
        "received_at",
        "target",
        "upgrade",
        "version",
    )

    def __init__(
        self,
        method: str,
        target: str,
        version: str,
        headers: Headers,
        body: bytes = b"",
        *,
        keep_alive: bool = True,
        upgrade: bool = False,
        peer: str = "",
        received_at: float = 0.0,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        self.peer = peer
        self.received_at = received_at
        self.disconnected = Disconnect()

    @property
    def path(self) -> str:
        """The target without its query (what may be logged: a query can
        carry a key)."""
        return self.target.split("?", 1)[0]

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.path}>"


def status_line(status: int, reason: str = "", version: str = "1.1") -> bytes:
    return f"HTTP/{version} {status} {reason or REASONS.get(status, 'Unknown')}\r\n".encode("latin-1")


def body_forbidden(status: int, method: str) -> bool:
    """Responses that never have a body, whatever their headers say."""
    return method == "HEAD" or 100 <= status < 200 or status in (204, 304)
