"""One chat call, whichever grammar the caller speaks and whichever
provider serves it.

1. ``check_request`` (the request-stage seam: hooks, quota).
2. Same format (an OpenAI chat call to an OpenAI provider, an Anthropic
   call to Anthropic): the caller's body goes out with only the model
   rewritten, and the answer comes back as the provider sent it.
3. Otherwise the provider's codec encodes the canonical request (auth
   headers and SigV4 included), decodes the answer (or the stream) back to
   canonical, and the caller's grammar writes it.
4. ``record_response`` (the response seam: usage and outcome events).
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from adapters.base import CodecError, WireRequest
from adapters.canonical import ChatRequest
from adapters.openai.codec import decode_chat, prepare_chat_body
from ingress.gateway import errors, quota
from ingress.gateway.cached import serve_cached
from ingress.gateway.compliance import stream_enforced
from ingress.gateway.failover import serve_routed
from ingress.gateway.intake import Admitted
from ingress.gateway.pipeline import check_request, event_usage, record_response, screen_response
from ingress.gateway.relay import relay_stream
from ingress.gateway.streaming import stream_call
from ingress.gateway.unary import exchange, guard, unreadable
from ingress.translate.grammar import ANTHROPIC_MESSAGES, OPENAI_CHAT, Grammar

_encoder = msgspec.json.Encoder()


def with_model(body: dict[str, Any], provider_model: str) -> bytes:
    """The caller's JSON with only the model rewritten (same-format calls)."""
    return _encoder.encode({**body, "model": provider_model})


def _same_format(grammar: Grammar, kind: str) -> bool:
    return (grammar is OPENAI_CHAT and kind == "openai") or (
        grammar is ANTHROPIC_MESSAGES and kind == "anthropic"
    )


async def serve_chat(
    request: web.Request, a: Admitted[Any], chat: ChatRequest, grammar: Grammar
) -> web.StreamResponse:
    chat = await check_request(a, chat) or chat
    # The exact cache / coalescing first; then a routed model walks its
    # candidates (retries, fallbacks, breakers).
    checked = chat
    return await serve_cached(
        request,
        a,
        checked,
        lambda: serve_routed(
            request, a, lambda target: serve_checked(request, target, checked, grammar), chat=checked
        ),
    )


def must_rewrite(a: Admitted[Any]) -> bool:
    """Whether the compliance engine changed (or must read) what goes out,
    so the caller's own bytes cannot be relayed as they are: a redacted
    request, or a stream whose text a chunked/buffer guard rewrites."""
    rc = a.ctx.compliance
    return rc is not None and (rc.request_redacted or (a.ctx.stream and stream_enforced(a.state, rc)))


async def serve_checked(
    request: web.Request, a: Admitted[Any], chat: ChatRequest, grammar: Grammar
) -> web.StreamResponse:
    """``serve_chat`` after the request stage (``chat`` is what it let through)."""
    chat = quota.capped(a, chat)  # this target's reservation (failover re-reserves)
    route, state, ctx = a.route, a.state, a.ctx
    codec = route.codec
    assert codec is not None  # admit refused providers without a codec
    rc = ctx.compliance
    # The caller's own bytes go out only when no hook rewrote the request;
    # a stream the response hooks read goes through the codec.
    redacted = rc is not None and rc.request_redacted
    screened_stream = ctx.stream and rc is not None and rc.response_hooks
    if grammar is OPENAI_CHAT and route.kind == "openai" and not redacted and not screened_stream:
        return await _openai_passthrough(request, a, chat)

    try:
        wire = codec.encode_chat(chat, route.target)
    except CodecError as exc:
        raise errors.from_canonical(exc.error, stage="route") from None
    same = _same_format(grammar, route.kind) and not redacted
    if same:
        wire = msgspec.structs.replace(wire, body=with_model(a.body, ctx.provider_model))
    shown = ctx.requested_model
    if ctx.stream:
        include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
        return await stream_call(
            request,
            a,
            chat,
            wire,
            codec.stream_decoder(route.target),
            grammar.stream_encoder(shown, include_usage),
            codec.normalise_error,
            raw=same and not stream_enforced(state, rc),
        )

    guard(a.upstream, wire.url)
    payload, upstream_ms = await exchange(state, ctx, a.upstream, wire, codec.normalise_error)
    try:
        response = codec.decode_chat(payload, route.target)
    except CodecError as exc:
        raise unreadable(state, ctx, upstream_ms, exc) from None
    response, rewritten = await screen_response(a, response, payload, upstream_ms)
    usage, estimated = event_usage(response.usage, chat, response)
    record_response(state, ctx, a.model, usage, estimated=estimated)
    if not response.id:  # Bedrock's Converse names none; clients expect one
        response.id = "nexus-" + ctx.request_id
    body = payload if same and not rewritten else grammar.encode_response(response, shown)
    return web.Response(body=body, content_type="application/json")


async def _openai_passthrough(
    request: web.Request, a: Admitted[Any], chat: ChatRequest
) -> web.StreamResponse:
    """OpenAI chat to an OpenAI provider: fields this gateway does not know
    still reach the provider; the canonical decode is for accounting."""
    state, ctx = a.state, a.ctx
    options = a.body.get("stream_options")
    wants_usage = isinstance(options, dict) and options.get("include_usage") is True
    body = prepare_chat_body(a.body, ctx.provider_model)
    if ctx.stream:
        return await relay_stream(
            request, state, ctx, a.upstream, body, chat, a.model, wants_usage=wants_usage
        )
    wire = WireRequest(url=a.upstream.chat_url, headers=a.upstream.headers, body=body)
    codec = a.route.codec
    assert codec is not None
    payload, upstream_ms = await exchange(state, ctx, a.upstream, wire, codec.normalise_error)
    try:
        response = decode_chat(payload)
    except CodecError as exc:
        raise unreadable(state, ctx, upstream_ms, exc) from None
    response, rewritten = await screen_response(a, response, payload, upstream_ms)
    usage, estimated = event_usage(response.usage, chat, response)
    record_response(state, ctx, a.model, usage, estimated=estimated)
    if rewritten:
        return web.Response(
            body=OPENAI_CHAT.encode_response(response, ctx.requested_model), content_type="application/json"
        )
    return web.Response(body=payload, content_type="application/json")
