"""The Cohere v2 provider codec."""

from __future__ import annotations

from collections.abc import Mapping

from adapters.base import Capability, CodecBase, StreamDecoder, Target, WireRequest
from adapters.canonical import CanonicalError, ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse
from adapters.cohere import errors, request, response
from adapters.cohere import wire as w
from adapters.cohere.stream import CohereStreamDecoder
from adapters.wirekit.jsonio import decode_upstream, encode, join_url

DEFAULT_BASE_URL = "https://api.cohere.com"


class CohereCodec(CodecBase):
    name = "cohere"
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

    def _wire(self, target: Target, path: str, body: bytes, stream: bool = False) -> WireRequest:
        headers = {
            "content-type": "application/json",
            "accept": "text/event-stream" if stream else "application/json",
            **target.headers,
        }
        if target.api_key:
            headers["authorization"] = f"Bearer {target.api_key}"
        return WireRequest(
            url=join_url(target.base_url or DEFAULT_BASE_URL, path), headers=headers, body=body
        )

    def encode_chat(self, request_: ChatRequest, target: Target) -> WireRequest:
        body = encode(request.build(request_, target.provider_model))
        return self._wire(target, "/v2/chat", body, bool(request_.stream))

    def decode_chat(self, body: bytes, target: Target) -> ChatResponse:
        return response.to_canonical(decode_upstream(body, w.ChatResponse, self.name), target.provider_model)

    def stream_decoder(self, target: Target) -> StreamDecoder:
        return CohereStreamDecoder(target.provider_model)

    def encode_embeddings(self, request_: EmbeddingRequest, target: Target) -> WireRequest:
        return self._wire(target, "/v2/embed", encode(request.build_embed(request_, target.provider_model)))

    def decode_embeddings(self, body: bytes, target: Target) -> EmbeddingResponse:
        return response.embeddings(decode_upstream(body, w.EmbedResponse, self.name), target.provider_model)

    def normalise_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> CanonicalError:
        return errors.normalise(status, body, headers)
