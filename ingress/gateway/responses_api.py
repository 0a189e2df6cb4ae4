"""``POST /v1/responses`` (the OpenAI Responses API).  A provider that
serves it natively (OpenAI) gets the caller's body with the model
rewritten and its answer relayed as is; every other provider is reached
through chat, translated both ways; what chat cannot carry
(previous_response_id, store=true, built-in tools) is a clear 400 there."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from adapters.base import WireRequest
from adapters.canonical import ChatRequest
from adapters.openai.errors import normalise_error
from ingress.gateway import compliance, errors, recording
from ingress.gateway.forward import must_rewrite, serve_chat, serve_checked, with_model
from ingress.gateway.intake import Admitted, admit
from ingress.gateway.pipeline import check_request, event_usage, record_response
from ingress.gateway.state import CTX
from ingress.gateway.streaming import stream_call
from ingress.gateway.unary import exchange
from ingress.translate.responses import (
    RESPONSES,
    NativeStreamReader,
    Untranslatable,
    decode_request,
    native_usage,
)

_any: msgspec.json.Decoder[Any] = msgspec.json.Decoder()

Parsed = tuple[ChatRequest | None, Untranslatable | None]


def _decode(raw: bytes) -> Parsed:
    # What only a native target can serve is not an error yet: the route
    # decides.  Every other problem is the caller's 400 right away.
    try:
        return decode_request(raw), None
    except Untranslatable as why:
        return None, why


async def responses(request: web.Request) -> web.StreamResponse:
    request[CTX].grammar = RESPONSES
    a = await admit(request, endpoint="responses", kind="chat", decode=_decode)
    chat, why = a.parsed
    if a.route.serves_responses:
        return await _native(request, a, chat)
    if why is not None:
        raise errors.needs_native_responses(why.what)
    assert chat is not None
    return await serve_chat(request, a, chat, RESPONSES)


async def _native(request: web.Request, a: Admitted[Parsed], chat: ChatRequest | None) -> web.StreamResponse:
    forwarded = await check_request(a, chat)
    rc = a.ctx.compliance
    if forwarded is not None and rc is not None and (must_rewrite(a) or rc.response_hooks):
        # The native passthrough would send the caller's unredacted bytes, or
        # answer with text no response hook has read: go through chat instead.
        return await serve_checked(request, a, forwarded, RESPONSES)
    state, ctx = a.state, a.ctx
    url = a.upstream.chat_url.rsplit("/chat/completions", 1)[0] + "/responses"
    wire = WireRequest(url=url, headers=a.upstream.headers, body=with_model(a.body, ctx.provider_model))
    if ctx.stream:
        return await stream_call(
            request,
            a,
            chat,
            wire,
            NativeStreamReader(ctx.provider_model),
            RESPONSES.stream_encoder(ctx.requested_model, True),
            normalise_error,
            raw=True,
        )
    payload, upstream_ms = await exchange(state, ctx, a.upstream, wire, normalise_error)
    try:
        parsed = _any.decode(payload)
    except msgspec.DecodeError:
        parsed = None
    if rc is not None:
        # No response hook applies here (else the call went through chat):
        # the stage is still on record.
        await compliance.stream_summary(state, ctx, rc)
    recording.upstream_result(state, ctx, status=200, upstream_ms=upstream_ms, body=payload)
    usage, estimated = event_usage(native_usage(parsed), chat, None)
    record_response(state, ctx, a.model, usage, estimated=estimated)
    return web.Response(body=payload, content_type="application/json")
