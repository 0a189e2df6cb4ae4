"""The Gemini provider codec (Google AI Studio endpoint).  Vertex subclasses
it and changes only the URL and the credential."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.base import Capability, CodecBase, StreamDecoder, Target, WireRequest
from adapters.canonical import (
    CanonicalError,
    ChatRequest,
    ChatResponse,
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
)
from adapters.gemini import errors, request, response
from adapters.gemini import wire as w
from adapters.gemini.stream import GeminiStreamDecoder
from adapters.wirekit.errors import bad_upstream
from adapters.wirekit.jsonio import decode_upstream, encode

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"


def resource(model: str) -> str:
    """The resource name of a model id: ``models/{id}``, or a tuned model's
    own (``tunedModels/{id}``, the id the proxy records for a call to one)."""
    return model if model.startswith("tunedModels/") else f"models/{model}"


class GeminiCodec(CodecBase):
    name = "gemini"
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

    # countTokens with Google's own tokenizer: a Gemini-format caller's body
    # goes to :countTokens as it is (the model is in the URL).
    native = frozenset({"gemini_count_tokens"})

    # --- what Vertex overrides ---------------------------------------------------

    def url(self, target: Target, action: str) -> str:
        base = (target.base_url or DEFAULT_BASE_URL).rstrip("/")
        named = None
        if base.endswith(("/v1beta", "/v1")):
            # A base URL with its version names it (the proxy aims a
            # caller's call at the version it addressed), unless the
            # provider's options say otherwise.
            base, named = base.rsplit("/", 1)
        version = target.options.get("api_version", named or "v1beta")
        return f"{base}/{version}/{resource(target.provider_model)}:{action}"

    def auth_headers(self, target: Target) -> dict[str, str]:
        return {"x-goog-api-key": target.api_key} if target.api_key else {}

    # --- chat ---------------------------------------------------------------------

    def _wire(self, target: Target, action: str, body: bytes) -> WireRequest:
        headers = {"content-type": "application/json", **self.auth_headers(target), **target.headers}
        return WireRequest(url=self.url(target, action), headers=headers, body=body)

    def encode_chat(self, request_: ChatRequest, target: Target) -> WireRequest:
        action = "streamGenerateContent?alt=sse" if request_.stream else "generateContent"
        return self._wire(target, action, encode(request.build(request_, target.provider_model)))

    def decode_chat(self, body: bytes, target: Target) -> ChatResponse:
        return response.to_canonical(
            decode_upstream(body, w.GenerateContentResponse, self.name), target.provider_model
        )

    def stream_decoder(self, target: Target) -> StreamDecoder:
        return GeminiStreamDecoder(target.provider_model, self.name)

    def encode_native(
        self, endpoint: str, body: dict[str, Any], target: Target, request: ChatRequest | None = None
    ) -> WireRequest:
        if endpoint != "gemini_count_tokens":
            return super().encode_native(endpoint, body, target, request)
        out = dict(body)
        for key in ("generateContentRequest", "generate_content_request"):
            inner = out.get(key)
            if isinstance(inner, dict):
                # A whole request names its model too: the provider's, as in the URL.
                out[key] = {**inner, "model": resource(target.provider_model)}
        return self._wire(target, "countTokens", encode(out))

    # --- embeddings -------------------------------------------------------------------

    def encode_embeddings(self, request_: EmbeddingRequest, target: Target) -> WireRequest:
        action, body = request.build_embed(request_, target.provider_model)
        return self._wire(target, action, encode(body))

    def decode_embeddings(self, body: bytes, target: Target) -> EmbeddingResponse:
        parsed = decode_upstream(body, w.EmbedResponse, self.name)
        vectors = (
            parsed.embeddings
            if parsed.embeddings is not None
            else ([parsed.embedding] if parsed.embedding is not None else None)
        )
        if vectors is None:
            raise bad_upstream(self.name, "embedding response had no embeddings")
        # Gemini reports no token usage for embeddings.
        return EmbeddingResponse(
            data=[Embedding(index=i, embedding=v.values) for i, v in enumerate(vectors)],
            model=target.provider_model,
            usage=EmbeddingUsage(),
        )

    def normalise_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> CanonicalError:
        return errors.normalise(self.name, status, body, headers)
