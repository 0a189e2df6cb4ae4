"""``POST /v1/chat/completions``: admit, then forward unary or relay the
stream.

OpenAI-family providers get the caller's own JSON with only ``model``
rewritten (plus ``stream_options.include_usage`` on streams), so fields this
gateway does not know still reach the provider.  The canonical decode is for
validation and accounting.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from adapters.canonical import ChatRequest
from adapters.openai.codec import decode_chat, prepare_chat_body, to_event_usage
from ingress.gateway import errors, recording
from ingress.gateway.intake import admit
from ingress.gateway.relay import relay_stream
from ingress.gateway.unary import forward_unary
from streams.events import Usage

_chat = msgspec.json.Decoder(ChatRequest)


def _check(chat: ChatRequest) -> None:
    if not chat.messages:
        raise errors.invalid_request("messages must not be empty.", "messages")


async def chat_completions(request: web.Request) -> web.StreamResponse:
    a = await admit(request, endpoint="chat", kind="chat", decode=_chat.decode, check=_check)
    options = a.body.get("stream_options")
    wants_usage = isinstance(options, dict) and options.get("include_usage") is True
    wire = prepare_chat_body(a.body, a.ctx.provider_model)
    if a.ctx.stream:
        return await relay_stream(
            request, a.state, a.ctx, a.upstream, wire, a.parsed, a.model, wants_usage=wants_usage
        )
    chat = a.parsed

    def account(payload: bytes) -> tuple[Usage, bool]:
        response = decode_chat(payload)
        usage = to_event_usage(response.usage)
        if usage is None:
            return recording.estimate_usage(chat, response), True
        return usage, False

    return await forward_unary(a.state, a.ctx, a.upstream.chat_url, a.upstream, wire, a.model, account)
