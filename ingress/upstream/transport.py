"""What the call stage needs of an HTTP client for a provider call, and the
aiohttp one behind that shape (``NEXUS_UPSTREAM_HTTP=aiohttp``; the lean
client in ``lean.py`` is the default).

The call stage sends a request and gets the response once its head is
read; it then reads the body whole (``read``) or as it arrives
(``chunks``), and always ``release``s it: a response read to its end gives
its connection back to the pool, one left early (an error, the caller gone)
closes it.  Failures are ``FAILURES``: a connection that could not be made
or broke, a malformed answer.  Timeouts are ``TimeoutError`` in both
clients (aiohttp's read and connect timeouts are ``TimeoutError`` too), and
callers catch them first: a provider too slow is a 504, one unreachable a
502.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Protocol

import aiohttp
from yarl import URL


class TransportError(Exception):
    """The lean client's failure: no connection, a connection that broke,
    an answer cut or malformed (aiohttp's are ``aiohttp.ClientError``)."""


class TransportTimeout(TransportError, TimeoutError):
    """No connection or no bytes within the provider's connect or read
    timeout (a ``TimeoutError``, as aiohttp's timeouts are)."""


FAILURES: tuple[type[Exception], ...] = (aiohttp.ClientError, TransportError)


class Response(Protocol):
    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    async def read(self) -> bytes: ...

    def chunks(self) -> AsyncIterator[bytes]: ...

    def release(self) -> None: ...


class Transport(Protocol):
    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> Response: ...

    async def close(self) -> None: ...

    @property
    def closed(self) -> bool: ...


def as_sent(url: str) -> URL:
    """The URL exactly as the codec encoded it.  yarl would otherwise
    re-normalise the path (a Bedrock model id's ``%3A`` back to ``:``),
    and a SigV4 signature computed over the encoded path would no longer
    match what the provider sees."""
    return URL(url, encoded=True)


class AiohttpResponse:
    __slots__ = ("_resp",)

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp

    @property
    def status(self) -> int:
        return self._resp.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._resp.headers

    async def read(self) -> bytes:
        return await self._resp.read()

    def chunks(self) -> AsyncIterator[bytes]:
        return self._resp.content.iter_any()

    def release(self) -> None:
        self._resp.release()


class AiohttpTransport:
    """Provider calls on an ``aiohttp.ClientSession`` (the pool's own, or
    the compliance proxy's for pass-through calls)."""

    __slots__ = ("session",)

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> Response:
        resp = await self.session.request(method, as_sent(url), data=body, headers=headers)
        return AiohttpResponse(resp)

    async def close(self) -> None:
        await self.session.close()

    @property
    def closed(self) -> bool:
        return self.session.closed
