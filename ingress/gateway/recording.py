"""The events a request leaves behind, built from its context.  Every event
carries the request id, the node and the tenant."""

from __future__ import annotations

import asyncio
import logging

import msgspec
from aiohttp import web

from adapters.canonical import ChatRequest, ChatResponse
from ingress.gateway.errors import GatewayError
from ingress.gateway.state import GatewayState, RequestContext
from streams.config import Model
from streams.config_quota import price_usage
from streams.events import (
    INLINE_BODY_LIMIT,
    Body,
    RequestCompleted,
    RequestFailed,
    RequestReceived,
    UpstreamResult,
    Usage,
    UsageRecorded,
)
from streams.spill import body_of

log = logging.getLogger("nexus.gateway")


def received(state: GatewayState, ctx: RequestContext, request: web.Request, raw: bytes) -> None:
    ctx.client_ip = request.remote or ""
    event = RequestReceived(
        request_id=ctx.request_id,
        node=state.node,
        tenant=ctx.tenant,
        endpoint=ctx.endpoint,
        path=request.path,
        requested_model=ctx.requested_model,
        stream=ctx.stream,
        client_ip=ctx.client_ip,
        user_agent=request.headers.get("User-Agent", "")[:256],
    )
    # With a hook pipeline the event waits for the request stage: what is
    # recorded is the redacted body when a redaction fired, and the bypass
    # flags in force.  Whatever the request does next flushes it first
    # (its occurred_at is still the moment it was received).
    ctx.pending_received = (event, raw)
    if state.compliance is None:
        flush_received(state, ctx)


def flush_received(
    state: GatewayState, ctx: RequestContext, *, body: bytes | None = None, redacted: bool = False
) -> None:
    pending = ctx.pending_received
    if pending is None:
        return
    ctx.pending_received = None
    event, raw = pending
    rc = ctx.compliance
    replace: dict[str, object] = {
        "body": capture(state, ctx, raw if body is None else body, redacted=redacted, response=False)
    }
    if rc is not None and rc.bypass.any:
        replace["passthrough_flags"] = rc.bypass.flags
        replace["passthrough_reason"] = rc.bypass.reason
    state.publisher.emit(msgspec.structs.replace(event, **replace))


def capture(state: GatewayState, ctx: RequestContext, data: bytes, *, redacted: bool, response: bool) -> Body:
    """The Body an event carries: inline up to the limit, else a reference
    to the spill store; the size only where the org's policy turns capture
    off (or a big body has nowhere to go)."""
    policy = state.snapshot.config.hooks.capture
    allowed = policy.responses if response else policy.requests
    if not allowed or ctx.tenant.org_id in policy.off_for_orgs:
        return Body(size=len(data), redacted=redacted)
    if len(data) <= INLINE_BODY_LIMIT:
        return Body(inline=data, size=len(data), redacted=redacted)
    if state.spill is None:
        return Body(size=len(data), redacted=redacted)  # too big to inline and nowhere to spill it
    body, _ = body_of(data, redacted=redacted)
    _spill(state, data)
    return body


def _spill(state: GatewayState, raw: bytes) -> None:
    spill = state.spill
    assert spill is not None

    async def put() -> None:
        try:
            await spill.put(raw)
        except Exception:
            log.exception("could not spill a request body of %d bytes", len(raw))

    task = asyncio.get_running_loop().create_task(put())
    state.background.add(task)
    task.add_done_callback(state.background.discard)


def upstream_result(
    state: GatewayState,
    ctx: RequestContext,
    *,
    status: int,
    upstream_ms: float,
    ttft_ms: float | None = None,
    error_code: str = "",
    body: bytes | None = None,
    redacted: bool = False,
) -> None:
    flush_received(state, ctx)
    state.publisher.emit(
        UpstreamResult(
            request_id=ctx.request_id,
            node=state.node,
            tenant=ctx.tenant,
            provider=ctx.provider,
            provider_model=ctx.provider_model,
            attempt=ctx.attempt,
            routing_rule=ctx.routing_rule,
            credential_id=ctx.credential_id,
            status=status,
            upstream_ms=upstream_ms,
            ttft_ms=ttft_ms,
            error_code=error_code,
            body=None if body is None else capture(state, ctx, body, redacted=redacted, response=True),
        )
    )


def estimate_usage(request: ChatRequest, response: ChatResponse | None) -> Usage:
    """Four characters per token: used only when the provider reported no
    usage (the event says ``estimated``)."""
    prompt = sum((len(m.text()) + 3) // 4 + 4 for m in request.messages) + 3
    completion = 0
    if response is not None:
        for c in response.choices:
            text = (c.message.content or "") + (c.message.reasoning_content or "")
            for call in c.message.tool_calls or ():
                text += call.function.name + call.function.arguments
            completion += (len(text) + 3) // 4
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def usage_recorded(
    state: GatewayState, ctx: RequestContext, model: Model, usage: Usage, *, estimated: bool
) -> None:
    flush_received(state, ctx)
    # Computed once, here: the quota processor settles this very figure.
    cost = None if model.price is None else price_usage(model.price, usage)
    ctx.usage_recorded = True
    ctx.cost_usd = cost or 0.0
    state.publisher.emit(
        UsageRecorded(
            request_id=ctx.request_id,
            node=state.node,
            tenant=ctx.tenant,
            provider=ctx.provider,
            provider_model=ctx.provider_model,
            model=model.name,
            usage=usage,
            cost_usd=cost or 0.0,
            priced=cost is not None,
            config_version=state.snapshot.version,
            estimated=estimated,
        )
    )


def completed(state: GatewayState, ctx: RequestContext, *, ttft_ms: float | None = None) -> None:
    flush_received(state, ctx)
    state.publisher.emit(
        RequestCompleted(
            request_id=ctx.request_id,
            node=state.node,
            tenant=ctx.tenant,
            status=200,
            latency_ms=ctx.elapsed_ms(),
            ttft_ms=ttft_ms,
            provider=ctx.provider,
            provider_model=ctx.provider_model,
            attempts=ctx.attempt,
            routing_rule=ctx.routing_rule,
            cache_status=ctx.cache_status,
            cache_saving_usd=ctx.cache_saving_usd,
        )
    )


def failed(state: GatewayState, ctx: RequestContext, err: GatewayError) -> None:
    flush_received(state, ctx)
    state.publisher.emit(
        RequestFailed(
            request_id=ctx.request_id,
            node=state.node,
            tenant=ctx.tenant,
            status=err.status,
            error_code=err.code,
            error_type=err.type,
            reason=err.message[:300],
            stage=err.stage,
            latency_ms=ctx.elapsed_ms(),
            provider=ctx.provider,
            provider_model=ctx.provider_model,
            attempts=ctx.attempt,
            routing_rule=ctx.routing_rule,
        )
    )
