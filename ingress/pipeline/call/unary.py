"""One upstream exchange (chat or embeddings, unary): send the wire request
on the provider's pooled client, map transport failures and non-200
answers to the caller's errors, and hand back the provider's body."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from adapters.base import CodecError, WireRequest
from adapters.canonical import CanonicalError
from ingress.pipeline import errors, record
from ingress.pipeline.exchange import Exchange
from ingress.pipeline.metrics import UPSTREAM, UPSTREAM_ERRORS, child
from ingress.upstream import Upstream
from ingress.upstream.transport import FAILURES
from streams.config_base import ConfigError
from streams.config_checks import check_outbound_url
from streams.events import Usage

Normalise = Callable[[int, bytes, Mapping[str, str]], CanonicalError]


def guard(upstream: Upstream, url: str) -> None:
    """The SSRF guard on a URL a codec built from configuration (or a
    provider handed back, as Replicate's stream URL).  The check is a
    function of the URL's text and the provider's setting: a URL that
    passed once passes again (the same few URLs serve every call)."""
    passed = upstream.guarded
    if url in passed:
        return
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
    if len(passed) >= 256:
        passed.clear()  # URLs with ids in them (a Replicate stream): bounded
    passed.add(url)


async def exchange(
    ex: Exchange,
    upstream: Upstream,
    wire: WireRequest,
    normalise: Normalise,
    prompt: Callable[[], Usage] | None = None,
) -> tuple[bytes, float]:
    """(body, upstream_ms) of a 2xx; anything else raises a GatewayError
    after recording the failed attempt.  ``prompt``: the estimated usage of
    what is sent, billed if the caller leaves while the provider works."""
    sent = time.perf_counter()
    ex.prompt_sent = prompt
    try:
        async with asyncio.timeout(upstream.provider.total_timeout_s or ex.rt.request_timeout_s):
            resp = await upstream.http.request(wire.method, wire.url, wire.headers, wire.body)
            try:
                payload = await resp.read()
            finally:
                resp.release()
            status = resp.status
    except TimeoutError:
        ex.prompt_sent = None
        failed_attempt(ex, sent, 0, "timeout")
        raise errors.upstream_timeout() from None
    except FAILURES:
        ex.prompt_sent = None
        failed_attempt(ex, sent, 0, "upstream_unreachable")
        raise errors.upstream_unreachable() from None
    except asyncio.CancelledError:
        # The caller left (handler cancellation): the call is cut here.
        failed_attempt(ex, sent, 0, "client_closed")
        raise
    upstream_ms = (time.perf_counter() - sent) * 1000
    child(UPSTREAM, ex.provider).observe(upstream_ms / 1000)
    if not 200 <= status < 300:  # Replicate answers 201 Created
        ex.prompt_sent = None  # refused: nothing billed
        credential_refused(ex, status)
        # The headers only now (the lean client makes them a mapping on demand).
        err = normalise(status, payload, resp.headers)
        UPSTREAM_ERRORS.labels(ex.provider, err.code).inc()
        record.upstream_result(ex, status=status, upstream_ms=upstream_ms, error_code=err.code)
        raise errors.from_canonical(err)
    return payload, upstream_ms


def unreadable(ex: Exchange, upstream_ms: float, exc: CodecError) -> errors.GatewayError:
    """A 200 whose body the codec could not read: recorded, then raised."""
    UPSTREAM_ERRORS.labels(ex.provider, exc.error.code).inc()
    record.upstream_result(ex, status=200, upstream_ms=upstream_ms, error_code=exc.error.code)
    return errors.from_canonical(exc.error)


def credential_refused(ex: Exchange, status: int) -> None:
    """A 401 means a minted credential (a Vertex access token) was revoked
    before it expired: drop it so the next request mints a fresh one."""
    if status == 401:
        route = ex.rt.routes.get(ex.model_name)
        if route is not None and route.minted is not None:
            route.minted.invalidate()


def failed_attempt(ex: Exchange, sent: float, status: int, code: str) -> None:
    UPSTREAM_ERRORS.labels(ex.provider, code).inc()
    record.upstream_result(
        ex, status=status, upstream_ms=(time.perf_counter() - sent) * 1000, error_code=code
    )
