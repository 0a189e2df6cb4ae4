"""One guarded HTTP POST for the webhook-shaped channels: SSRF-checked at
connect time (unless the channel allows private networks), never following
a redirect (to somewhere the guard has not seen), a total timeout, and the
answer classified as delivered, worth retrying, or final."""

from __future__ import annotations

import aiohttp

from processors.alerts.channels.base import Outcome
from processors.alerts.guard import PrivateAddressRefused, PublicOnlyResolver

# Statuses that say "not now" rather than "never": retried.
_RETRY = frozenset({408, 425, 429})


class Poster:
    def __init__(self, *, timeout_s: float, allow_private: bool) -> None:
        self._timeout_s = timeout_s
        self._allow_private = allow_private
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
                connector=aiohttp.TCPConnector(
                    limit=4, resolver=None if self._allow_private else PublicOnlyResolver()
                ),
            )
        return self._session

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Outcome:
        try:
            async with self._open().post(url, data=body, headers=headers, allow_redirects=False) as resp:
                await resp.read()  # drain (the connection goes back to the pool); never logged
                status = resp.status
        except PrivateAddressRefused as exc:
            return Outcome(False, reason=str(exc))
        except aiohttp.ClientConnectorError as exc:
            cause = exc.os_error
            if isinstance(cause, PrivateAddressRefused):
                return Outcome(False, reason=str(cause))
            return Outcome(False, reason=f"cannot connect: {type(cause).__name__}", retry=True)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Outcome(False, reason=f"POST failed: {type(exc).__name__}", retry=True)
        if 200 <= status < 300:
            return Outcome(True, status)
        if 300 <= status < 400:
            return Outcome(False, status, f"HTTP {status} (redirects are not followed)")
        return Outcome(False, status, f"HTTP {status}", retry=status >= 500 or status in _RETRY)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
