"""``POST /v1/messages/count_tokens`` (Anthropic clients) and
``:countTokens`` (Gemini clients): how many input tokens a request would
bill, answered in the caller's shape (``input_tokens``, ``totalTokens``).

A provider that counts natively in the caller's own format (Anthropic for
Anthropic callers, Gemini for Gemini callers) counts with its own tokenizer:
the caller's body goes to its count endpoint (model rewritten, or in the URL).  Any
other provider is counted here, with the rule the gateway's quota estimates
use (``X-Nexus-Token-Count: estimated``; an upper-leaning estimate).

The prompt passes the request-stage hooks like any other: it may leave for
a provider, and a prompt the gateway would refuse to forward is not counted
either (a redacted prompt is counted as redacted).  A count bills nothing:
no quota reservation, no usage event; the request is recorded like any other
(received, the provider's answer, completed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgspec

from adapters.anthropic import wire as anthropic_wire
from adapters.base import CodecError
from adapters.canonical import CanonicalError, ChatRequest
from ingress.pipeline import errors, record
from ingress.pipeline.call.unary import exchange, guard, unreadable
from ingress.pipeline.exchange import Exchange, send_json
from ingress.quota.estimate import estimate_prompt_tokens

_encoder = msgspec.json.Encoder()


class _GeminiCount(msgspec.Struct, rename="camel"):
    total_tokens: int = 0


# endpoint -> (the provider's answer, checked before it is relayed; the
# gateway's own estimate in the caller's shape)
_ANSWERS: dict[str, tuple[msgspec.json.Decoder[Any], Callable[[int], dict[str, int]]]] = {
    "count_tokens": (msgspec.json.Decoder(anthropic_wire.CountTokensResponse), lambda n: {"input_tokens": n}),
    "gemini_count_tokens": (msgspec.json.Decoder(_GeminiCount), lambda n: {"totalTokens": n}),
}
COUNT_HEADER = "X-Nexus-Token-Count"


def check(chat: ChatRequest) -> None:
    if not chat.messages:
        raise errors.invalid_request("messages must not be empty.", "messages")


async def count_call(ex: Exchange) -> None:
    chat, route = ex.chat, ex.route
    assert chat is not None and route is not None
    if ex.endpoint in ex.codec.native:
        await _provider_count(ex, chat)
        return
    ex.attempt = 0  # no upstream call
    # The tokenizer tables load on first use (seconds): off the loop.
    n = await asyncio.to_thread(estimate_prompt_tokens, chat, route.kind, ex.provider_model)
    record.completed(ex)
    ex.headers_out[COUNT_HEADER] = "estimated"
    await send_json(ex, _encoder.encode(_ANSWERS[ex.endpoint][1](n)))


async def _provider_count(ex: Exchange, chat: ChatRequest) -> None:
    route, upstream = ex.route, ex.upstream
    assert route is not None and upstream is not None
    codec = ex.codec
    try:
        # The caller's body as the request hooks left it, model rewritten.
        wire = codec.encode_native(ex.endpoint, ex.body, route.target, chat)
    except CodecError as exc:
        raise errors.from_canonical(exc.error, stage="route") from None
    guard(upstream, wire.url)
    payload, upstream_ms = await exchange(ex, upstream, wire, codec.normalise_error)
    try:
        _ANSWERS[ex.endpoint][0].decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        bad = CanonicalError(code="upstream_error", message="The provider's count is unreadable.", status=502)
        raise unreadable(ex, upstream_ms, CodecError(bad)) from None
    record.upstream_result(ex, status=200, upstream_ms=upstream_ms)
    record.completed(ex)
    ex.headers_out[COUNT_HEADER] = "provider"
    await send_json(ex, payload)
