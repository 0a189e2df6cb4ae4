"""What every provider codec provides.  Codecs are pure: they turn canonical
values into wire requests and wire bytes back into canonical values; the
HTTP transport lives in ``ingress``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Protocol

import msgspec

from adapters.canonical import (
    CanonicalError,
    ChatChunk,
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
)


class Capability(enum.StrEnum):
    TEXT = "text"
    STREAM = "stream"
    TOOLS = "tools"
    TOOLS_STREAM = "tools+stream"
    VISION = "vision"
    JSON_SCHEMA = "json_schema"
    REASONING = "reasoning"
    EMBEDDINGS = "embeddings"
    RESPONSES = "responses"  # serves the OpenAI Responses API natively


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """Where one attempt goes: the provider's base URL, its model id, the
    credential (already resolved from the environment or the vault) and the
    provider's static options (api-version, region, ...)."""

    provider: str
    base_url: str
    provider_model: str
    api_key: str | None = None
    headers: Mapping[str, str] = {}
    options: Mapping[str, Any] = {}


class WireRequest(msgspec.Struct, frozen=True, kw_only=True):
    method: str = "POST"
    url: str
    headers: Mapping[str, str]
    body: bytes


class StreamDecoder(Protocol):
    """Fed the raw bytes of an upstream stream as they arrive; yields
    canonical chunks.  ``close`` flushes anything buffered at end of stream.
    Unknown event types are skipped, never raised."""

    def feed(self, data: bytes) -> list[ChatChunk]: ...

    def close(self) -> list[ChatChunk]: ...


class Codec(Protocol):
    name: str
    capabilities: frozenset[Capability]

    def encode_chat(self, request: ChatRequest, target: Target) -> WireRequest: ...

    def decode_chat(self, body: bytes, target: Target) -> ChatResponse: ...

    def stream_decoder(self, target: Target) -> StreamDecoder: ...

    def encode_embeddings(self, request: EmbeddingRequest, target: Target) -> WireRequest: ...

    def decode_embeddings(self, body: bytes, target: Target) -> EmbeddingResponse: ...

    def normalise_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> CanonicalError: ...


class CodecError(Exception):
    """A codec could not translate: the request asks for something the target
    cannot express (-> 400), or a provider body did not parse (-> 502)."""

    def __init__(self, error: CanonicalError) -> None:
        super().__init__(error.message)
        self.error = error


class StreamError(CodecError):
    """An upstream reported an error in the middle of a stream.  ``chunks``
    holds what was decoded before the error in the same ``feed`` call, to be
    forwarded before the caller's error frame so no delivered text is lost."""

    def __init__(self, error: CanonicalError, chunks: list[ChatChunk] | None = None) -> None:
        super().__init__(error)
        self.chunks = chunks or []
