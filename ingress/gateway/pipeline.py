"""The two seams of every model call.

``check_request`` runs after the request is admitted (authenticated,
parsed, routed) and before anything is sent upstream: request-stage
compliance hooks and quota reservations belong here, and raising a
GatewayError stops the request in the caller's grammar.

``record_response`` runs once per answered call, unary or streamed (a
stream is folded into the response it stands for first): the usage event
(provider-reported, else estimated) and the outcome event.  Response-stage
hooks and quota settlement hang off it.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from adapters.canonical import ChatRequest, ChatResponse
from adapters.canonical import Usage as CanonicalUsage
from adapters.openai.codec import to_event_usage
from ingress.gateway import compliance, quota, recording
from ingress.gateway.errors import GatewayError
from ingress.gateway.intake import Admitted
from ingress.gateway.metrics import TTFT, UPSTREAM, child
from ingress.gateway.state import GatewayState, RequestContext
from streams.config import Model
from streams.events import Usage

_encoder = msgspec.json.Encoder()


async def check_request(admitted: Admitted[Any], chat: ChatRequest | None) -> ChatRequest | None:
    """Request-stage checks.  ``chat`` is the canonical request (None for
    embeddings and for Responses calls that only a native target can read).
    Returns what to forward: ``chat`` itself, or its redacted copy when a
    compliance hook redacted something (``ctx.compliance.request_redacted``);
    raises the caller's 403 (429 for a rate limit) on a block.  Embeddings
    inputs are screened as text too; a redaction rewrites ``admitted``'s
    body and parsed request in place."""
    state, ctx = admitted.state, admitted.ctx
    rc = compliance.begin(state, ctx, admitted.route.kind)
    if rc is None:
        recording.flush_received(state, ctx)
        return await quota.admit(admitted, chat)
    view = chat if chat is not None else compliance.embedding_view(admitted.parsed)
    recorded: bytes | None = None
    try:
        forwarded = await compliance.request_stage(state, ctx, rc, view, len(admitted.raw))
        if rc.request_redacted and forwarded is not None:
            if chat is None:
                compliance.redact_embeddings(admitted, forwarded)
                recorded, forwarded = _encoder.encode(admitted.body), None
            else:
                recorded = _encoder.encode(forwarded)
    finally:
        # Recorded whatever the stage decided (a block is audited too); the
        # body is the redacted request when a redaction fired.
        recording.flush_received(state, ctx, body=recorded, redacted=recorded is not None)
    # Quota last: a request a hook blocks never holds a reservation, and the
    # estimate is of what is forwarded.
    return await quota.admit(admitted, forwarded)


async def screen_response(
    a: Admitted[Any], response: ChatResponse, payload: bytes, upstream_ms: float
) -> tuple[ChatResponse, bool]:
    """A unary answer's response stage, then its UpstreamResult (with the
    body: the redacted one when a redaction fired).  Returns (response to
    send, redacted); raises the caller's 403 on a block."""
    state, ctx = a.state, a.ctx
    rc = ctx.compliance
    if rc is None:
        recording.upstream_result(state, ctx, status=200, upstream_ms=upstream_ms, body=payload)
        return response, False
    screened, result = await compliance.response_stage(state, ctx, rc, response)
    redacted = result.redacted and not result.blocked
    recording.upstream_result(
        state,
        ctx,
        status=200,
        upstream_ms=upstream_ms,
        body=_encoder.encode(screened) if redacted else payload,
        redacted=redacted,
    )
    if result.blocked:
        # The provider billed this answer though the caller never sees it:
        # its usage is recorded (and settles the quota reservation), else a
        # caller could spend unmetered by provoking blocks.
        chat = a.parsed if isinstance(a.parsed, ChatRequest) else None
        usage, estimated = event_usage(response.usage, chat, response)
        recording.usage_recorded(state, ctx, a.model, usage, estimated=estimated)
        raise compliance.blocked(result)
    return screened, redacted


def event_usage(
    usage: CanonicalUsage | None, chat: ChatRequest | None, response: ChatResponse | None
) -> tuple[Usage, bool]:
    """(usage, estimated): the provider's numbers, else an estimate."""
    reported = to_event_usage(usage)
    if reported is not None:
        return reported, False
    request = chat if chat is not None else ChatRequest(model="", messages=[])
    return recording.estimate_usage(request, response), True


def stream_timings(
    ctx: RequestContext, sent: float, first_upstream: float | None, first_caller: float | None
) -> tuple[float, float | None, float | None]:
    """(upstream ms, upstream TTFT ms, caller TTFT ms) of a relayed stream,
    with the upstream and caller-side TTFT histograms observed on the way."""
    upstream_ms = (time.perf_counter() - sent) * 1000
    child(UPSTREAM, ctx.provider).observe(upstream_ms / 1000)
    upstream_ttft = (first_upstream - sent) * 1000 if first_upstream else None
    caller_ttft = (first_caller - ctx.started) * 1000 if first_caller else None
    if caller_ttft is not None:
        child(TTFT, ctx.model).observe(caller_ttft / 1000)
    return upstream_ms, upstream_ttft, caller_ttft


def record_response(
    state: GatewayState,
    ctx: RequestContext,
    model: Model,
    usage: Usage,
    *,
    estimated: bool,
    ttft_ms: float | None = None,
    failure: GatewayError | None = None,
) -> None:
    recording.usage_recorded(state, ctx, model, usage, estimated=estimated)
    if failure is None:
        recording.completed(state, ctx, ttft_ms=ttft_ms)
    else:
        recording.failed(state, ctx, failure)
        ctx.outcome_status = failure.status
