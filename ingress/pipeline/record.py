"""The events a request leaves behind, built from its exchange.  Every
event carries the request id, the node and the tenant."""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec

from adapters.canonical import ChatRequest, ChatResponse
from ingress.pipeline.errors import GatewayError
from ingress.pipeline.exchange import Exchange
from ingress.pipeline.runtime import EventSink
from ingress.quota.pricing import price_usage
from streams.config import Model
from streams.events import (
    INLINE_BODY_LIMIT,
    Body,
    Node,
    RequestCompleted,
    RequestFailed,
    RequestReceived,
    UpstreamResult,
    Usage,
    UsageRecorded,
)
from streams.spill import body_of

log = logging.getLogger("nexus.gateway")


def received(ex: Exchange) -> None:
    """What arrived, noted the moment it arrived (before the key is checked
    or the body read): the event's time, path, method, client address and
    user agent.  It is emitted with the request's first event: the endpoint,
    tenant, model and body are filled in by then if the request got that
    far, so a refused request (401, 404, 413) leaves a row saying what was
    received too.  A request that records nothing (a GET /v1/models that
    worked) emits nothing."""
    inbound = ex.inbound
    ex.pending_received = (
        RequestReceived(
            request_id=ex.request_id,
            node=ex.rt.node,
            method=inbound.method,
            path=inbound.path[:2048],
            client_ip=ex.client_ip,
            user_agent=(inbound.headers.get("User-Agent") or "")[:256],
            ingress=ex.ingress,
            interception=ex.interception,
        ),
        None,
    )


def body_read(ex: Exchange, raw: bytes) -> None:
    """The body of a received request, parsed enough to know its model."""
    pending = ex.pending_received
    if pending is not None:
        ex.pending_received = (pending[0], raw)
    # With a hook pipeline the event waits for the request stage: what is
    # recorded is the redacted body when a redaction fired, and the bypass
    # flags in force.  Whatever the request does next flushes it first
    # (its occurred_at is still the moment it was received).
    if ex.rt.compliance is None:
        flush_received(ex)


def flush_received(ex: Exchange, *, body: bytes | None = None, redacted: bool = False) -> None:
    pending = ex.pending_received
    if pending is None:
        return
    ex.pending_received = None
    event, raw = pending
    rc = ex.compliance
    replace: dict[str, object] = {
        "tenant": ex.tenant,
        "endpoint": ex.endpoint,
        "ingress_format": ex.grammar.name,
        "requested_model": ex.requested_model,
        "stream": ex.stream,
    }
    if raw is not None:
        data = raw if body is None else body
        replace["body"] = capture(ex, data, redacted=redacted, response=False)
    if rc is not None and rc.bypass.any:
        replace["passthrough_flags"] = rc.bypass.flags
        replace["passthrough_reason"] = rc.bypass.reason
    ex.rt.publisher.emit(msgspec.structs.replace(event, **replace))


def capture(ex: Exchange, data: bytes, *, redacted: bool, response: bool) -> Body:
    """The Body an event carries: inline up to the limit, else a reference
    to the spill store; the size only where the org's policy turns capture
    off (or a big body has nowhere to go)."""
    policy = ex.rt.snapshot.config.hooks.capture
    allowed = policy.responses if response else policy.requests
    if not allowed or ex.tenant.org_id in policy.off_for_orgs:
        return Body(size=len(data), redacted=redacted)
    if len(data) <= INLINE_BODY_LIMIT:
        return Body(inline=data, size=len(data), redacted=redacted)
    if ex.rt.spill is None:
        return Body(size=len(data), redacted=redacted)  # too big to inline and nowhere to spill it
    body, _ = body_of(data, redacted=redacted)
    _spill(ex, data)
    return body


def _spill(ex: Exchange, raw: bytes) -> None:
    spill = ex.rt.spill
    assert spill is not None

    async def put() -> None:
        try:
            await spill.put(raw)
        except Exception:
            log.exception("could not spill a request body of %d bytes", len(raw))

    task = asyncio.get_running_loop().create_task(put())
    ex.rt.background.add(task)
    task.add_done_callback(ex.rt.background.discard)


def upstream_result(
    ex: Exchange,
    *,
    status: int,
    upstream_ms: float,
    ttft_ms: float | None = None,
    error_code: str = "",
    body: bytes | None = None,
    redacted: bool = False,
) -> None:
    flush_received(ex)
    ex.rt.publisher.emit(
        UpstreamResult(
            request_id=ex.request_id,
            node=ex.rt.node,
            tenant=ex.tenant,
            provider=ex.provider,
            provider_model=ex.provider_model,
            attempt=ex.attempt,
            routing_rule=ex.routing_rule,
            credential_id=ex.credential_id,
            status=status,
            upstream_ms=upstream_ms,
            ttft_ms=ttft_ms,
            error_code=error_code,
            body=None if body is None else capture(ex, body, redacted=redacted, response=True),
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


def usage_recorded(ex: Exchange, model: Model, usage: Usage, *, estimated: bool) -> None:
    flush_received(ex)
    # Computed once, here: the quota processor settles this very figure.
    cost = None if model.price is None else price_usage(model.price, usage)
    ex.usage_recorded = True
    ex.cost_usd = cost or 0.0
    ex.rt.publisher.emit(
        UsageRecorded(
            request_id=ex.request_id,
            node=ex.rt.node,
            tenant=ex.tenant,
            provider=ex.provider,
            provider_model=ex.provider_model,
            model=model.name,
            usage=usage,
            cost_usd=cost or 0.0,
            priced=cost is not None,
            config_version=ex.rt.snapshot.version,
            estimated=estimated,
        )
    )


def completed(ex: Exchange, *, ttft_ms: float | None = None) -> None:
    flush_received(ex)
    if ex.outcome_recorded:
        return  # the caller left first (abandoned): that was its outcome
    ex.outcome_recorded = True
    ex.rt.publisher.emit(
        RequestCompleted(
            request_id=ex.request_id,
            node=ex.rt.node,
            tenant=ex.tenant,
            status=200,
            latency_ms=ex.elapsed_ms(),
            ttft_ms=ttft_ms,
            model=ex.model_name,
            provider=ex.provider,
            provider_model=ex.provider_model,
            attempts=ex.attempt,
            routing_rule=ex.routing_rule,
            cache_status=ex.cache_status,
            cache_saving_usd=ex.cache_saving_usd,
        )
    )


def shed(publisher: EventSink, node: Node, request_id: str, started: float, reason: str) -> None:
    """A request refused at admission (429) is an event too, and a compact
    one: nothing was read of it (no tenant, no body, no model), so one
    RequestFailed with the reason is all there is to say.  Built and emitted
    on the shed path, which must stay cheap: see admission.py for its cost."""
    publisher.emit(
        RequestFailed(
            request_id=request_id,
            node=node,
            status=429,
            error_code="overloaded",
            error_type="rate_limit_error",
            reason=reason,
            stage="admission",
            latency_ms=(time.perf_counter() - started) * 1000,
        )
    )


def failed(ex: Exchange, err: GatewayError) -> None:
    flush_received(ex)
    if ex.outcome_recorded:
        return
    ex.outcome_recorded = True
    ex.rt.publisher.emit(
        RequestFailed(
            request_id=ex.request_id,
            node=ex.rt.node,
            tenant=ex.tenant,
            status=err.status,
            error_code=err.code,
            error_type=err.type,
            reason=err.message[:300],
            stage=err.stage,
            latency_ms=ex.elapsed_ms(),
            model=ex.model_name,
            provider=ex.provider,
            provider_model=ex.provider_model,
            attempts=ex.attempt,
            routing_rule=ex.routing_rule,
        )
    )


CLIENT_GONE = GatewayError(
    499, "client_error", "client_closed", "The caller closed the connection.", stage="client"
)


def abandoned(ex: Exchange) -> None:
    """The caller went away before its answer (the handler was cancelled):
    the outcome is a 499, and a prompt a provider was already working on is
    billed as estimated (its answer, and its usage report, never came)."""
    if ex.outcome_recorded:
        return
    sent = ex.prompt_sent
    model = ex.model
    if sent is not None and model is not None and not ex.usage_recorded and not ex.detached:
        usage_recorded(ex, model, sent(), estimated=True)
    failed(ex, CLIENT_GONE)
