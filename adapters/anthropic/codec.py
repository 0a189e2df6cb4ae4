"""The Anthropic provider codec: canonical <-> /v1/messages."""

from __future__ import annotations

from collections.abc import Mapping

from adapters.anthropic import errors, request, response
from adapters.anthropic import wire as w
from adapters.anthropic.stream import AnthropicStreamDecoder
from adapters.base import Capability, StreamDecoder, Target, WireRequest
from adapters.canonical import CanonicalError, ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse
from adapters.wirekit.errors import not_served
from adapters.wirekit.jsonio import decode_upstream, join_url

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_VERSION = "2023-06-01"


class AnthropicCodec:
    name = "anthropic"
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
        headers = {
            "content-type": "application/json",
            "anthropic-version": str(target.options.get("anthropic_version", DEFAULT_VERSION)),
        }
        if target.api_key:
            headers["x-api-key"] = target.api_key
        beta = (request_.nexus_ext or {}).get("anthropic", {}).get("beta") or target.options.get(
            "anthropic_beta"
        )
        if beta:
            headers["anthropic-beta"] = ",".join(beta) if isinstance(beta, list) else str(beta)
        headers.update(target.headers)
        return WireRequest(
            url=join_url(target.base_url or DEFAULT_BASE_URL, "/v1/messages"),
            headers=headers,
            body=request.with_server_tools(body, request_),
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
