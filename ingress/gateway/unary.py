"""The non-streaming path (chat and embeddings): one upstream call, the
provider's body returned as is, usage read from it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
from aiohttp import web

from adapters.base import CodecError
from adapters.openai.errors import normalise_error
from ingress.gateway import errors, recording
from ingress.gateway.metrics import UPSTREAM, UPSTREAM_ERRORS
from ingress.gateway.state import GatewayState, RequestContext
from ingress.upstream import Upstream
from streams.config import Model
from streams.events import Usage


async def forward_unary(
    state: GatewayState,
    ctx: RequestContext,
    url: str,
    upstream: Upstream,
    wire: bytes,
    model: Model,
    account: Callable[[bytes], tuple[Usage, bool]],
) -> web.Response:
    """One upstream call; ``account`` reads (usage, estimated) from the
    provider's body, raising CodecError when it cannot be read."""
    sent = time.perf_counter()
    try:
        async with (
            asyncio.timeout(state.request_timeout_s),
            upstream.session.post(url, data=wire, headers=upstream.headers) as resp,
        ):
            payload = await resp.read()
            status = resp.status
            headers = resp.headers
    except TimeoutError:
        _failed_attempt(state, ctx, sent, 0, "timeout")
        raise errors.upstream_timeout() from None
    except aiohttp.ClientError:
        _failed_attempt(state, ctx, sent, 0, "upstream_unreachable")
        raise errors.upstream_unreachable() from None
    upstream_ms = (time.perf_counter() - sent) * 1000
    UPSTREAM.labels(ctx.provider).observe(upstream_ms / 1000)

    if status != 200:
        err = normalise_error(status, payload, headers)
        UPSTREAM_ERRORS.labels(ctx.provider, err.code).inc()
        recording.upstream_result(state, ctx, status=status, upstream_ms=upstream_ms, error_code=err.code)
        raise errors.from_canonical(err)
    try:
        usage, estimated = account(payload)
    except CodecError as exc:
        UPSTREAM_ERRORS.labels(ctx.provider, exc.error.code).inc()
        recording.upstream_result(
            state, ctx, status=status, upstream_ms=upstream_ms, error_code=exc.error.code
        )
        raise errors.from_canonical(exc.error) from None

    recording.upstream_result(state, ctx, status=status, upstream_ms=upstream_ms)
    recording.usage_recorded(state, ctx, model, usage, estimated=estimated)
    recording.completed(state, ctx)
    return web.Response(body=payload, content_type="application/json")


def _failed_attempt(state: GatewayState, ctx: RequestContext, sent: float, status: int, code: str) -> None:
    UPSTREAM_ERRORS.labels(ctx.provider, code).inc()
    recording.upstream_result(
        state, ctx, status=status, upstream_ms=(time.perf_counter() - sent) * 1000, error_code=code
    )
