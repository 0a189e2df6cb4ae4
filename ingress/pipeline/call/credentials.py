"""Provider credentials that are minted, not configured: a Vertex AI
provider whose credential (``api_key_env``) holds a service-account JSON
gets OAuth2 access tokens from the account's token endpoint (RFC 7523 JWT
bearer grant, built by ``adapters.vertex.auth``), cached process-wide until
shortly before they expire.  At most one refresh runs per account; every
other request waits for it instead of minting its own."""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp

from adapters.base import CodecError
from adapters.vertex.auth import (
    ServiceAccount,
    TokenCache,
    parse_service_account,
    parse_token_response,
    token_request,
)
from ingress.pipeline import errors
from ingress.pipeline.errors import GatewayError
from streams.config import Provider
from streams.config_base import ConfigError
from streams.config_checks import check_outbound_url

log = logging.getLogger("nexus.gateway.credentials")

TOKENS = TokenCache()


def _refused(why: str) -> GatewayError:
    # The gateway's credential failed, not the caller's: a 502, and never
    # the token endpoint's body (it can echo the assertion).
    return GatewayError(502, "api_error", "auth_failed", f"vertex: {why}", stage="upstream")


class VertexServiceAccount:
    __slots__ = ("_lock", "account", "provider")

    def __init__(self, provider: Provider, account: ServiceAccount) -> None:
        self.provider = provider
        self.account = account
        self._lock = asyncio.Lock()

    @classmethod
    def of(cls, provider: Provider, credential: str | None) -> VertexServiceAccount | None:
        """The service account in a Vertex provider's credential, if it is
        one (a plain access token is used as it is)."""
        if provider.kind != "vertex" or not credential or not credential.lstrip().startswith("{"):
            return None
        try:
            account = parse_service_account(credential)
            check_outbound_url(
                account.token_uri,
                allow_private=provider.allow_private_network,
                where=f"provider {provider.name} token_uri",
            )
        except CodecError as exc:
            raise ConfigError(f"provider {provider.name}: {exc.error.message}") from None
        return cls(provider, account)

    def cached(self) -> str | None:
        return TOKENS.get(self.account, time.time())

    async def token(self, session: aiohttp.ClientSession, timeout_s: float) -> str:
        token = self.cached()
        if token is not None:
            return token
        async with self._lock:
            token = self.cached()  # minted while this request waited
            if token is not None:
                return token
            return await self._mint(session, timeout_s)

    async def _mint(self, session: aiohttp.ClientSession, timeout_s: float) -> str:
        now = time.time()
        try:
            wire = token_request(self.account, int(now))
        except CodecError as exc:
            raise _refused(exc.error.message.removeprefix("vertex: ")) from None
        try:
            async with (
                asyncio.timeout(timeout_s),
                session.post(wire.url, data=wire.body, headers=dict(wire.headers)) as resp,
            ):
                body = await resp.read()
                status = resp.status
        except TimeoutError:
            raise errors.upstream_timeout() from None
        except aiohttp.ClientError:
            raise _refused("the token endpoint could not be reached") from None
        if status != 200:
            log.warning("provider %s: token endpoint answered HTTP %d", self.provider.name, status)
            raise _refused(f"the token endpoint refused the service account (HTTP {status})")
        try:
            minted = parse_token_response(body, now)
        except CodecError as exc:
            raise _refused(exc.error.message.removeprefix("vertex: ")) from None
        TOKENS.put(self.account, minted)
        return minted.token

    def invalidate(self) -> None:
        """After a 401 from Vertex: the token was revoked early."""
        TOKENS.invalidate(self.account)
