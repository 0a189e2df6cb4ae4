"""The Anthropic provider codec: canonical <-> /v1/messages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from adapters.anthropic import errors, request, response
from adapters.anthropic import wire as w
from adapters.anthropic.stream import AnthropicStreamDecoder
from adapters.base import Capability, CodecBase, StreamDecoder, Target, WireRequest
from adapters.canonical import CanonicalError, ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse
from adapters.wirekit.errors import not_served
from adapters.wirekit.jsonio import decode_upstream, join_url

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_VERSION = "2023-06-01"


_NATIVE_PATHS = {"messages": "/v1/messages", "count_tokens": "/v1/messages/count_tokens"}
_encoder = msgspec.json.Encoder()


def _headers(target: Target, request_: ChatRequest | None) -> dict[str, str]:
    headers = {
        "content-type": "application/json",
        "anthropic-version": str(target.options.get("anthropic_version", DEFAULT_VERSION)),
    }
    if target.api_key:
        headers["x-api-key"] = target.api_key
    ext = (request_.nexus_ext or {}) if request_ is not None else {}
    beta = ext.get("anthropic", {}).get("beta") or target.options.get("anthropic_beta")
    if beta:
        headers["anthropic-beta"] = ",".join(beta) if isinstance(beta, list) else str(beta)
    headers.update(target.headers)
    return headers


class AnthropicCodec(CodecBase):
    name = "anthropic"
    native = frozenset(_NATIVE_PATHS)
    capabilities = frozenset(
        {
            Capability.TEXT,
            Capability.STREAM,
            Capability.TOOLS,
            Capability.TOOLS_STREAM,
            Capability.VISION,
            Capability.JSON_SCHEMA,
            Capability.REASONING,
        }
    )

    def encode_chat(self, request_: ChatRequest, target: Target) -> WireRequest:
        body = request.build(request_, target.provider_model)
        return WireRequest(
            url=join_url(target.base_url or DEFAULT_BASE_URL, "/v1/messages"),
            headers=_headers(target, request_),
            body=request.with_server_tools(body, request_),
        )

    def encode_native(
        self, endpoint: str, body: dict[str, Any], target: Target, request: ChatRequest | None = None
    ) -> WireRequest:
        path = _NATIVE_PATHS.get(endpoint)
        if path is None:
            return super().encode_native(endpoint, body, target, request)
        return WireRequest(
            url=join_url(target.base_url or DEFAULT_BASE_URL, path),
            headers=_headers(target, request),
            body=_encoder.encode({**body, "model": target.provider_model}),
        )

    def decode_chat(self, body: bytes, target: Target) -> ChatResponse:
        return response.to_canonical(decode_upstream(body, w.MessagesResponse, self.name))

    def stream_decoder(self, target: Target) -> StreamDecoder:
        return AnthropicStreamDecoder()

    def encode_embeddings(self, request_: EmbeddingRequest, target: Target) -> WireRequest:
        raise not_served(self.name, "embeddings")

    def decode_embeddings(self, body: bytes, target: Target) -> EmbeddingResponse:
        raise not_served(self.name, "embeddings")

    def normalise_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> CanonicalError:
        return errors.normalise(status, body, headers)
