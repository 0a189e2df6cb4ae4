"""The OpenAI codec: identity encoding (the canonical types are OpenAI
shaped), tolerant decoding, the SSE stream decoder, usage extraction and
error normalisation.  Pure functions; no I/O."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import msgspec

from adapters.base import Capability, Codec, CodecBase, CodecError, StreamError, Target, WireRequest
from adapters.canonical import (
    CanonicalError,
    ChatChunk,
    ChatRequest,
    ChatResponse,
    ChunkChoice,
    Delta,
    EmbeddingRequest,
    EmbeddingResponse,
    Usage,
)
from adapters.openai.errors import normalise_error, provider_error
from adapters.openai.sse import SSEEvent, SSEParser
from adapters.openai.wire import ChunkWire, ResponseWire
from streams import events

log = logging.getLogger("nexus.adapters.openai")

FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})

_encoder = msgspec.json.Encoder()
_any: msgspec.json.Decoder[Any] = msgspec.json.Decoder()
_response = msgspec.json.Decoder(ResponseWire)
_chunk = msgspec.json.Decoder(ChunkWire)
_embeddings = msgspec.json.Decoder(EmbeddingResponse)
_warned: set[str] = set()


def finish_reason(value: str | None) -> str | None:
    """Known finish reasons pass; anything else becomes "unknown" (and is
    logged once per value), never an exception."""
    if value is None or value in FINISH_REASONS:
        return value
    if value not in _warned and len(_warned) < 100:
        _warned.add(value)
        log.warning("unknown finish_reason %r mapped to 'unknown'", value[:40])
    return "unknown"


def chat_url(base_url: str) -> str:
    return base_url.rstrip("/") + "/chat/completions"


def embeddings_url(base_url: str) -> str:
    return base_url.rstrip("/") + "/embeddings"


def request_headers(target: Target) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    headers.update(target.headers)
    if target.api_key:
        headers["Authorization"] = f"Bearer {target.api_key}"
    return headers


# --- requests ------------------------------------------------------------------


def _fill_wire_defaults(body: dict[str, Any]) -> None:
    # The canonical structs omit defaults when encoded, and OpenAI requires
    # ``type: "function"`` on tools, tool calls and named tool choices.
    for tool in body.get("tools") or ():
        tool.setdefault("type", "function")
    for msg in body.get("messages") or ():
        for call in msg.get("tool_calls") or ():
            call.setdefault("type", "function")
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        choice.setdefault("type", "function")


def prepare_chat_body(body: dict[str, Any], provider_model: str) -> bytes:
    """The same-format passthrough: the caller's JSON object with only
    ``model`` rewritten, and ``stream_options.include_usage`` forced on for
    streams so usage can be accounted.  Unknown fields survive untouched;
    the caller's own dict is not changed (the recording reads it)."""
    out = {**body, "model": provider_model}
    if body.get("stream") is True:
        options = body.get("stream_options")
        out["stream_options"] = (
            {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
        )
    return _encoder.encode(out)


def responses_url(base_url: str) -> str:
    return base_url.rstrip("/") + "/responses"


_NATIVE_URLS = {"chat": chat_url, "responses": responses_url, "embeddings": embeddings_url}


def encode_native(endpoint: str, body: dict[str, Any], target: Target) -> WireRequest:
    """The caller's own body to OpenAI's endpoint of the same name."""
    if endpoint == "chat":
        data = prepare_chat_body(body, target.provider_model)
    else:
        data = _encoder.encode({**body, "model": target.provider_model})
    url = _NATIVE_URLS[endpoint](target.base_url)
    return WireRequest(url=url, headers=request_headers(target), body=data)


def encode_chat(request: ChatRequest, target: Target) -> WireRequest:
    body: dict[str, Any] = msgspec.to_builtins(request)
    body.pop("nexus_ext", None)
    _fill_wire_defaults(body)
    return WireRequest(
        url=chat_url(target.base_url),
        headers=request_headers(target),
        body=prepare_chat_body(body, target.provider_model),
    )


def encode_embeddings(request: EmbeddingRequest, target: Target) -> WireRequest:
    body: dict[str, Any] = msgspec.to_builtins(request)
    body.pop("nexus_ext", None)
    body["model"] = target.provider_model
    return WireRequest(
        url=embeddings_url(target.base_url), headers=request_headers(target), body=_encoder.encode(body)
    )


# --- responses -----------------------------------------------------------------


_CUT_OFF = CanonicalError(
    code="upstream_error", message="The provider's stream ended unexpectedly.", status=502
)


def _unreadable(what: str) -> CodecError:
    return CodecError(
        CanonicalError(code="upstream_error", message=f"the provider sent an unreadable {what}", status=502)
    )


def decode_chat(body: bytes) -> ChatResponse:
    try:
        wire = _response.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise _unreadable("response") from None
    for choice in wire.choices:
        choice.finish_reason = finish_reason(choice.finish_reason)
    return ChatResponse(
        id=wire.id,
        model=wire.model,
        choices=wire.choices,
        created=wire.created,
        usage=wire.usage,
        system_fingerprint=wire.system_fingerprint,
        service_tier=wire.service_tier,
    )


def decode_embeddings(body: bytes) -> EmbeddingResponse:
    try:
        return _embeddings.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise _unreadable("embeddings response") from None


def to_event_usage(usage: Usage | None) -> events.Usage | None:
    """The provider's usage as the event contract records it (cached and
    reasoning tokens are subsets of prompt and completion tokens)."""
    if usage is None:
        return None
    total = usage.total_tokens or usage.prompt_tokens + usage.completion_tokens
    return events.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=total,
        cached_tokens=usage.cached_tokens,
        cache_creation_tokens=usage.cache_creation_tokens,
        reasoning_tokens=usage.reasoning_tokens,
    )


# --- streams -------------------------------------------------------------------


class OpenAIStreamDecoder:
    """Bytes of an OpenAI SSE stream in, canonical chunks out.

    An error frame from the provider raises StreamError, carrying the chunks
    decoded before it in the same read (they reached the provider's caller
    before the error, so they reach ours).  ``require_done``: a stream that
    ends without ``[DONE]`` was cut off (OpenAI itself always sends it; some
    compatible providers do not, and are judged by their finish reason).
    Events that are not chunks are skipped with a warning.
    """

    __slots__ = ("done", "error", "require_done", "sse")

    def __init__(self, *, require_done: bool = False) -> None:
        self.sse = SSEParser()
        self.done = False
        self.require_done = require_done
        self.error: CanonicalError | None = None

    def feed(self, data: bytes) -> list[ChatChunk]:
        return self._chunks(self.sse.feed(data))

    def close(self) -> list[ChatChunk]:
        chunks = self._chunks(self.sse.close())
        if self.require_done and not self.done:
            raise StreamError(_CUT_OFF, chunks)
        return chunks

    def _chunks(self, evs: list[SSEEvent]) -> list[ChatChunk]:
        out: list[ChatChunk] = []
        for ev in evs:
            chunk = self.decode_event(ev)
            if self.error is not None:
                raise StreamError(self.error, out)
            if chunk is not None:
                out.append(chunk)
        return out

    def decode_event(self, ev: SSEEvent) -> ChatChunk | None:
        data = ev.data
        if data == b"[DONE]":
            self.done = True
            return None
        try:
            wire = _chunk.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            wire = None
        if wire is None or (wire.choices is None and wire.usage is None):
            err = provider_error(data) if data[:1] == b"{" else None
            if err is not None and (ev.event == "error" or b'"error"' in data):
                self.error = CanonicalError(
                    code="upstream_error",
                    message="the provider reported an error mid-stream"
                    + (f" (type {err.type})" if err.type else ""),
                    status=502,
                )
            else:
                log.warning("skipping an unreadable stream event (%d bytes)", len(data))
            return None
        choices = [
            ChunkChoice(
                index=c.index,
                delta=c.delta if c.delta is not None else Delta(),
                finish_reason=finish_reason(c.finish_reason),
                logprobs=c.logprobs,
            )
            for c in wire.choices or ()
        ]
        return ChatChunk(
            id=wire.id,
            model=wire.model,
            choices=choices,
            created=wire.created,
            usage=wire.usage,
            system_fingerprint=wire.system_fingerprint,
        )


class OpenAICodec(CodecBase):
    """The OpenAI codec; also the codec of every OpenAI-compatible provider."""

    name = "openai"
    native = frozenset({"chat", "responses", "embeddings"})
    capabilities = frozenset(
        {
            Capability.TEXT,
            Capability.STREAM,
            Capability.TOOLS,
            Capability.TOOLS_STREAM,
            Capability.VISION,
            Capability.JSON_SCHEMA,
            Capability.REASONING,
            Capability.EMBEDDINGS,
        }
    )

    def encode_chat(self, request: ChatRequest, target: Target) -> WireRequest:
        return encode_chat(request, target)

    def decode_chat(self, body: bytes, target: Target) -> ChatResponse:
        return decode_chat(body)

    def stream_decoder(self, target: Target) -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder(require_done=True)

    def encode_native(
        self, endpoint: str, body: dict[str, Any], target: Target, request: ChatRequest | None = None
    ) -> WireRequest:
        return encode_native(endpoint, body, target)

    def encode_embeddings(self, request: EmbeddingRequest, target: Target) -> WireRequest:
        return encode_embeddings(request, target)

    def decode_embeddings(self, body: bytes, target: Target) -> EmbeddingResponse:
        return decode_embeddings(body)

    def normalise_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> CanonicalError:
        return normalise_error(status, body, headers)


CODEC: Codec = OpenAICodec()
