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

from typing import Any

from adapters.canonical import ChatRequest, ChatResponse
from adapters.canonical import Usage as CanonicalUsage
from adapters.openai.codec import to_event_usage
from ingress.gateway import recording
from ingress.gateway.errors import GatewayError
from ingress.gateway.intake import Admitted
from ingress.gateway.state import GatewayState, RequestContext
from streams.config import Model
from streams.events import Usage


async def check_request(admitted: Admitted[Any], chat: ChatRequest | None) -> None:
    """Request-stage checks.  ``chat`` is the canonical request (None for
    embeddings and for Responses calls that only a native target can read)."""
    return None


def event_usage(
    usage: CanonicalUsage | None, chat: ChatRequest | None, response: ChatResponse | None
) -> tuple[Usage, bool]:
    """(usage, estimated): the provider's numbers, else an estimate."""
    reported = to_event_usage(usage)
    if reported is not None:
        return reported, False
    request = chat if chat is not None else ChatRequest(model="", messages=[])
    return recording.estimate_usage(request, response), True


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
