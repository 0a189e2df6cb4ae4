"""The caller's grammar: how a request body is read and how responses,
stream chunks and errors are written, for each ingress format.  The gateway
picks one per route and never branches on the format anywhere else."""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from adapters.anthropic import ingress as anthropic_ingress
from adapters.canonical import ChatChunk, ChatRequest, ChatResponse
from ingress.translate import openai_out

_encoder = msgspec.json.Encoder()
_chat = msgspec.json.Decoder(ChatRequest)


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


# --- OpenAI chat completions ---------------------------------------------------------


def openai_error(failure: Failure) -> dict[str, Any]:
    return {
        "error": {
            "message": failure.message,
            "type": failure.type,
            "code": failure.code,
            "param": failure.param,
        }
    }


class OpenAIChunks:
    __slots__ = ("include_usage", "model")

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage

    def feed(self, chunk: ChatChunk) -> bytes:
        if not chunk.choices and not (self.include_usage and chunk.usage is not None):
            return b""
        if chunk.usage is not None and not self.include_usage:
            chunk = msgspec.structs.replace(chunk, usage=None)
        return b"data: " + _encoder.encode(openai_out.chunk_json(chunk, self.model)) + b"\n\n"

    def finish(self) -> bytes:
        return b"data: [DONE]\n\n"

    def error(self, failure: Failure) -> bytes:
        return b"data: " + _encoder.encode(openai_error(failure)) + b"\n\n"


class OpenAIChat:
    name = "openai"

    def decode(self, raw: bytes) -> ChatRequest:
        return _chat.decode(raw)

    def encode_response(self, resp: ChatResponse, model: str) -> bytes:
        return openai_out.encode_chat_response(resp, model)

    def stream_encoder(self, model: str, include_usage: bool) -> StreamEncoder:
        return OpenAIChunks(model, include_usage)

    def error_body(self, failure: Failure) -> bytes:
        return _encoder.encode(openai_error(failure))


# --- Anthropic Messages ----------------------------------------------------------------

# https://docs.anthropic.com/en/api/errors: the type follows the HTTP status.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error(failure: Failure) -> bytes:
    kind = _ANTHROPIC_TYPES.get(
        failure.status, "api_error" if failure.status >= 500 else "invalid_request_error"
    )
    return _encoder.encode({"type": "error", "error": {"type": kind, "message": failure.message}})


class AnthropicEvents:
    __slots__ = ("inner",)

    def __init__(self, model: str) -> None:
        self.inner = anthropic_ingress.MessagesStreamEncoder(model)

    def feed(self, chunk: ChatChunk) -> bytes:
        return self.inner.feed(chunk)

    def finish(self) -> bytes:
        return self.inner.finish()

    def error(self, failure: Failure) -> bytes:
        return b"event: error\ndata: " + anthropic_error(failure) + b"\n\n"


class AnthropicMessages:
    name = "anthropic"

    def decode(self, raw: bytes) -> ChatRequest:
        return anthropic_ingress.decode_request(raw)

    def encode_response(self, resp: ChatResponse, model: str) -> bytes:
        return anthropic_ingress.encode_response(resp, model)

    def stream_encoder(self, model: str, include_usage: bool) -> StreamEncoder:
        return AnthropicEvents(model)

    def error_body(self, failure: Failure) -> bytes:
        return anthropic_error(failure)


OPENAI_CHAT = OpenAIChat()
ANTHROPIC_MESSAGES = AnthropicMessages()
