"""What a model call leaves on record once answered, unary or streamed (a
stream is folded into the response it stands for first): the usage event
(the provider's figures, else an estimate) and the outcome event, plus the
timings of a stream."""

from __future__ import annotations

import time
from collections.abc import Callable

from adapters.canonical import ChatRequest, ChatResponse
from adapters.canonical import Usage as CanonicalUsage
from adapters.openai.codec import to_event_usage
from ingress.pipeline import record
from ingress.pipeline.errors import GatewayError
from ingress.pipeline.exchange import Exchange
from ingress.pipeline.metrics import TTFT, UPSTREAM, child
from streams.config import Model
from streams.events import Usage


def sent_prompt(chat: ChatRequest | None, raw: bytes) -> Callable[[], Usage]:
    """The estimated usage of a prompt sent to a provider, for when the
    caller leaves before the answer (and its usage report) arrives: the
    canonical request's, else one token per four bytes of the body."""

    def estimate() -> Usage:
        if chat is not None:
            return record.estimate_usage(chat, None)
        n = (len(raw) + 3) // 4
        return Usage(prompt_tokens=n, total_tokens=n)

    return estimate


def event_usage(
    usage: CanonicalUsage | None, chat: ChatRequest | None, response: ChatResponse | None
) -> tuple[Usage, bool]:
    """(usage, estimated): the provider's numbers, else an estimate."""
    reported = to_event_usage(usage)
    if reported is not None:
        return reported, False
    request = chat if chat is not None else ChatRequest(model="", messages=[])
    return record.estimate_usage(request, response), True


def stream_timings(
    ex: Exchange, sent: float, first_upstream: float | None, first_caller: float | None
) -> tuple[float, float | None, float | None]:
    """(upstream ms, upstream TTFT ms, caller TTFT ms) of a relayed stream,
    with the upstream and caller-side TTFT histograms observed on the way."""
    upstream_ms = (time.perf_counter() - sent) * 1000
    child(UPSTREAM, ex.provider).observe(upstream_ms / 1000)
    upstream_ttft = (first_upstream - sent) * 1000 if first_upstream else None
    caller_ttft = (first_caller - ex.started) * 1000 if first_caller else None
    if caller_ttft is not None:
        child(TTFT, ex.model_name).observe(caller_ttft / 1000)
    return upstream_ms, upstream_ttft, caller_ttft


def record_response(
    ex: Exchange,
    model: Model,
    usage: Usage,
    *,
    estimated: bool,
    ttft_ms: float | None = None,
    failure: GatewayError | None = None,
) -> None:
    record.usage_recorded(ex, model, usage, estimated=estimated)
    if failure is None:
        record.completed(ex, ttft_ms=ttft_ms)
    else:
        record.failed(ex, failure)
        ex.outcome_status = failure.status
