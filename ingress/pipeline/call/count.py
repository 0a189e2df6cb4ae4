"""``POST /v1/messages/count_tokens`` (Anthropic clients): how many input
tokens a Messages request would bill.

A provider that counts natively (Anthropic) counts with its own tokenizer: the caller's body goes
to its ``/v1/messages/count_tokens`` with only the model rewritten.  Any
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

import msgspec

from adapters.anthropic import wire as anthropic_wire
from adapters.base import CodecError
from adapters.canonical import CanonicalError, ChatRequest
from ingress.pipeline import errors, record
from ingress.pipeline.call.unary import exchange, guard, unreadable
from ingress.pipeline.exchange import Exchange, send_json
from ingress.quota.estimate import estimate_prompt_tokens

_encoder = msgspec.json.Encoder()
_counted = msgspec.json.Decoder(anthropic_wire.CountTokensResponse)
COUNT_HEADER = "X-Nexus-Token-Count"


def check(chat: ChatRequest) -> None:
    if not chat.messages:
        raise errors.invalid_request("messages must not be empty.", "messages")


async def count_call(ex: Exchange) -> None:
    chat, route = ex.chat, ex.route
    assert chat is not None and route is not None
    if "count_tokens" in ex.codec.native:
        await _provider_count(ex, chat)
        return
    ex.attempt = 0  # no upstream call
    # The tokenizer tables load on first use (seconds): off the loop.
    n = await asyncio.to_thread(estimate_prompt_tokens, chat, route.kind, ex.provider_model)
    record.completed(ex)
    ex.headers_out[COUNT_HEADER] = "estimated"
    await send_json(ex, _encoder.encode({"input_tokens": n}))


async def _provider_count(ex: Exchange, chat: ChatRequest) -> None:
    route, upstream = ex.route, ex.upstream
    assert route is not None and upstream is not None
    codec = ex.codec
    try:
        # The caller's body as the request hooks left it, model rewritten.
        wire = codec.encode_native("count_tokens", ex.body, route.target, chat)
    except CodecError as exc:
        raise errors.from_canonical(exc.error, stage="route") from None
    guard(upstream, wire.url)
    payload, upstream_ms = await exchange(ex, upstream, wire, codec.normalise_error)
    try:
        _counted.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        bad = CanonicalError(code="upstream_error", message="The provider's count is unreadable.", status=502)
        raise unreadable(ex, upstream_ms, CodecError(bad)) from None
    record.upstream_result(ex, status=200, upstream_ms=upstream_ms)
    record.completed(ex)
    ex.headers_out[COUNT_HEADER] = "provider"
    await send_json(ex, payload)
