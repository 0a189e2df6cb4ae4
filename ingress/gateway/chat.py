"""``POST /v1/chat/completions``: authenticate, read and validate, route,
then forward unary or relay the stream.

OpenAI-family providers get the caller's own JSON with only ``model``
rewritten (plus ``stream_options.include_usage`` on streams), so fields this
gateway does not know still reach the provider.  The canonical decode is for
validation and accounting.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from adapters.canonical import ChatRequest
from adapters.openai.codec import prepare_chat_body
from ingress.gateway import errors, recording
from ingress.gateway.auth import authenticate, may_use
from ingress.gateway.body import read_body
from ingress.gateway.relay import relay_stream
from ingress.gateway.state import CTX, STATE
from ingress.gateway.unary import forward_unary

# Providers that speak the OpenAI wire format (the 9 compatible providers
# are configured with kind "openai" or their own name listed here).
OPENAI_FAMILY = frozenset({"openai", "openai-compatible", "azure-openai", "sim"})

_any: msgspec.json.Decoder[Any] = msgspec.json.Decoder()
_chat = msgspec.json.Decoder(ChatRequest)


def _param(exc: msgspec.ValidationError) -> str | None:
    # msgspec: "Expected `array`, got `str` - at `$.messages[0].role`" -> "messages"
    text = str(exc)
    if text.startswith("Object missing required field `"):
        return text.split("`")[1]
    if "- at `$." not in text:
        return None
    path = text.rsplit("- at `$.", 1)[1].rstrip("`")
    return path.split("[")[0].split(".")[0] or None


def _message(exc: msgspec.ValidationError) -> str:
    text = str(exc).replace("`$.", "`").replace("`$`", "the body")
    return f"Invalid request: {text[:300]}"


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    ctx = request[CTX]
    ctx.endpoint = "chat"
    snapshot = state.snapshot
    key = authenticate(request.headers, snapshot)
    ctx.set_key(key)
    raw = await read_body(request, state.max_body_bytes)
    try:
        body: Any = _any.decode(raw)
    except msgspec.DecodeError:
        body = None
        invalid: errors.GatewayError | None = errors.invalid_json()
    else:
        invalid = None if isinstance(body, dict) else errors.not_an_object()
    if isinstance(body, dict):
        requested = body.get("model")
        ctx.requested_model = requested[:200] if isinstance(requested, str) else ""
        ctx.stream = body.get("stream") is True
    recording.received(state, ctx, request, raw)
    if invalid is not None:
        raise invalid
    assert isinstance(body, dict)
    if not ctx.requested_model:
        raise errors.missing_model()
    try:
        chat = _chat.decode(raw)
    except msgspec.ValidationError as exc:
        raise errors.invalid_request(_message(exc), _param(exc)) from None
    if not chat.messages:
        raise errors.invalid_request("messages must not be empty.", "messages")

    model = snapshot.models.get(ctx.requested_model)
    if model is None or model.kind != "chat":
        raise errors.unknown_model(ctx.requested_model)
    ctx.model = model.name
    if not may_use(key, model, ctx.requested_model):
        raise errors.model_not_allowed(ctx.requested_model)
    provider = snapshot.providers[model.provider]
    ctx.provider = provider.name
    ctx.provider_model = model.provider_model or model.name
    if provider.kind not in OPENAI_FAMILY:
        raise errors.unsupported_provider(provider.kind)
    upstream = state.upstreams.get(provider.name)

    wants_usage = bool(
        isinstance(body.get("stream_options"), dict) and body["stream_options"].get("include_usage") is True
    )
    wire = prepare_chat_body(body, ctx.provider_model)
    if ctx.stream:
        return await relay_stream(request, state, ctx, upstream, wire, chat, model, wants_usage=wants_usage)
    return await forward_unary(state, ctx, upstream, wire, chat, model)
