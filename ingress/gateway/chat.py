"""``POST /v1/chat/completions`` (OpenAI clients) and ``POST /v1/messages``
(Anthropic clients): admit in the caller's grammar, then one chat call."""

from __future__ import annotations

from aiohttp import web

from adapters.canonical import ChatRequest
from ingress.gateway import errors
from ingress.gateway.forward import serve_chat
from ingress.gateway.intake import admit
from ingress.gateway.state import CTX
from ingress.translate.grammar import ANTHROPIC_MESSAGES, OPENAI_CHAT


def _check(chat: ChatRequest) -> None:
    if not chat.messages:
        raise errors.invalid_request("messages must not be empty.", "messages")


async def chat_completions(request: web.Request) -> web.StreamResponse:
    a = await admit(request, endpoint="chat", kind="chat", decode=OPENAI_CHAT.decode, check=_check)
    return await serve_chat(request, a, a.parsed, OPENAI_CHAT)


async def messages(request: web.Request) -> web.StreamResponse:
    request[CTX].grammar = ANTHROPIC_MESSAGES
    a = await admit(
        request,
        endpoint="messages",
        kind="chat",
        decode=ANTHROPIC_MESSAGES.decode,
        check=_check,
        key_header="x-api-key",
    )
    return await serve_chat(request, a, a.parsed, ANTHROPIC_MESSAGES)
