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
    # The caller grammars (endpoint names: chat, messages, responses,
    # embeddings, count_tokens) this provider serves as they are: the
    # caller's own body goes out (model rewritten) and the answer comes back
    # as the provider wrote it, so fields the gateway does not know survive.
    native: frozenset[str]
    # The stream is read in two steps (a first call names the stream's URL).
    two_step_stream: bool

    def encode_chat(self, request: ChatRequest, target: Target) -> WireRequest: ...

    def decode_chat(self, body: bytes, target: Target) -> ChatResponse: ...

    def stream_decoder(self, target: Target) -> StreamDecoder: ...

    def encode_embeddings(self, request: EmbeddingRequest, target: Target) -> WireRequest: ...

    def decode_embeddings(self, body: bytes, target: Target) -> EmbeddingResponse: ...

    def normalise_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> CanonicalError: ...

    def encode_native(
        self, endpoint: str, body: dict[str, Any], target: Target, request: ChatRequest | None = None
    ) -> WireRequest:
        """The caller's own body (an endpoint in ``native``) for this
        provider: the model rewritten, the provider's URL and credential.
        ``request`` is the canonical reading of the same body, for options
        the caller gave in headers (Anthropic betas)."""
        ...

    def stream_url(self, created: bytes) -> str:
        """A two-step stream: the URL the first answer names."""
        ...


class CodecBase:
    """Defaults for what most codecs do not have: no native grammar (every
    call is translated), a stream in one step."""

    native: frozenset[str] = frozenset()
    two_step_stream = False

    def encode_native(
        self, endpoint: str, body: dict[str, Any], target: Target, request: ChatRequest | None = None
    ) -> WireRequest:
        raise CodecError(
            CanonicalError(
                code="invalid_request", message=f"this provider does not serve {endpoint} as is", status=400
            )
        )

    def stream_url(self, created: bytes) -> str:
        raise CodecError(
            CanonicalError(code="upstream_error", message="this provider streams in one step", status=502)
        )


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
