"""One upstream exchange (chat or embeddings, unary): send the wire request
on the provider's pooled session, map transport failures and non-200
answers to the caller's errors, and hand back the provider's body."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

import aiohttp
from yarl import URL

from adapters.base import CodecError, WireRequest
from adapters.canonical import CanonicalError
from ingress.gateway import errors, recording
from ingress.gateway.metrics import UPSTREAM, UPSTREAM_ERRORS, child
from ingress.gateway.state import GatewayState, RequestContext
from ingress.upstream import Upstream
from streams.config import ConfigError, check_outbound_url

Normalise = Callable[[int, bytes, Mapping[str, str]], CanonicalError]


def as_sent(url: str) -> URL:
    """The URL exactly as the codec encoded it.  yarl would otherwise
    re-normalise the path (a Bedrock model id's ``%3A`` back to ``:``),
    and a SigV4 signature computed over the encoded path would no longer
    match what the provider sees."""
    return URL(url, encoded=True)


def guard(upstream: Upstream, url: str) -> None:
    """The SSRF guard on a URL a codec built from configuration (or a
    provider handed back, as Replicate's stream URL)."""
    try:
        check_outbound_url(
            url,
            allow_private=upstream.provider.allow_private_network,
            where=f"provider {upstream.provider.name}",
        )
    except ConfigError:
        raise errors.from_canonical(
            CanonicalError(code="upstream_error", message="The provider URL was refused.", status=502)
        ) from None


async def exchange(
    state: GatewayState, ctx: RequestContext, upstream: Upstream, wire: WireRequest, normalise: Normalise
) -> tuple[bytes, float]:
    """(body, upstream_ms) of a 2xx; anything else raises a GatewayError
    after recording the failed attempt."""
    sent = time.perf_counter()
    try:
        async with (
            asyncio.timeout(upstream.provider.total_timeout_s or state.request_timeout_s),
            upstream.session.request(
                wire.method, as_sent(wire.url), data=wire.body, headers=wire.headers
            ) as resp,
        ):
            payload = await resp.read()
            status = resp.status
            headers = resp.headers
    except TimeoutError:
        failed_attempt(state, ctx, sent, 0, "timeout")
        raise errors.upstream_timeout() from None
    except aiohttp.ClientError:
        failed_attempt(state, ctx, sent, 0, "upstream_unreachable")
        raise errors.upstream_unreachable() from None
    upstream_ms = (time.perf_counter() - sent) * 1000
    child(UPSTREAM, ctx.provider).observe(upstream_ms / 1000)
    if not 200 <= status < 300:  # Replicate answers 201 Created
        credential_refused(state, ctx, status)
        err = normalise(status, payload, headers)
        UPSTREAM_ERRORS.labels(ctx.provider, err.code).inc()
        recording.upstream_result(state, ctx, status=status, upstream_ms=upstream_ms, error_code=err.code)
        raise errors.from_canonical(err)
    return payload, upstream_ms


def unreadable(
    state: GatewayState, ctx: RequestContext, upstream_ms: float, exc: CodecError
) -> errors.GatewayError:
    """A 200 whose body the codec could not read: recorded, then raised."""
    UPSTREAM_ERRORS.labels(ctx.provider, exc.error.code).inc()
    recording.upstream_result(state, ctx, status=200, upstream_ms=upstream_ms, error_code=exc.error.code)
    return errors.from_canonical(exc.error)


def credential_refused(state: GatewayState, ctx: RequestContext, status: int) -> None:
    """A 401 means a minted credential (a Vertex access token) was revoked
    before it expired: drop it so the next request mints a fresh one."""
    if status == 401:
        route = state.routes.get(ctx.model)
        if route is not None and route.minted is not None:
            route.minted.invalidate()


def failed_attempt(state: GatewayState, ctx: RequestContext, sent: float, status: int, code: str) -> None:
    UPSTREAM_ERRORS.labels(ctx.provider, code).inc()
    recording.upstream_result(
        state, ctx, status=status, upstream_ms=(time.perf_counter() - sent) * 1000, error_code=code
    )
