"""The caller's grammar: how a request body is read and how responses,
stream chunks and errors are written, for each ingress format.  The gateway
picks one per route and never branches on the format anywhere else.

The grammars: ``openai_chat.OPENAI_CHAT``, ``anthropic_messages.ANTHROPIC_MESSAGES``,
``responses.RESPONSES`` and ``gemini_generate.GEMINI_GENERATE``."""

from __future__ import annotations

from typing import Protocol

import msgspec

from adapters.canonical import ChatChunk, ChatRequest, ChatResponse


class Failure(msgspec.Struct, frozen=True):
    """An error as the caller will see it (the gateway's GatewayError, minus
    HTTP concerns)."""

    status: int
    type: str
    code: str
    message: str
    param: str | None = None


class StreamEncoder(Protocol):
    def feed(self, chunk: ChatChunk) -> bytes: ...

    def finish(self) -> bytes: ...

    def error(self, failure: Failure) -> bytes: ...


class Grammar(Protocol):
    name: str

    def decode(self, raw: bytes) -> ChatRequest:
        """Raises msgspec.ValidationError or adapters.base.CodecError."""
        ...

    def encode_response(self, resp: ChatResponse, model: str) -> bytes: ...

    def stream_encoder(self, model: str, include_usage: bool) -> StreamEncoder: ...

    def error_body(self, failure: Failure) -> bytes: ...
