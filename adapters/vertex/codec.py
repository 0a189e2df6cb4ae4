"""Vertex AI publisher models: the Gemini body codec at
{location}-aiplatform.googleapis.com/v1/projects/{p}/locations/{l}/
publishers/{pub}/models/{m}:{action}, authorised by an OAuth2 access token
(Target.api_key holds the token ingress minted via ``vertex.auth``).
Embeddings use the Vertex ``:predict`` shape.

With options.publisher == "anthropic" (Claude on Vertex) the body is the
Anthropic Messages body without ``model`` and with Vertex's
``anthropic_version``, sent to ``:rawPredict`` / ``:streamRawPredict``; the
answers are Anthropic's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from adapters.anthropic import request as anthropic_request
from adapters.anthropic.codec import AnthropicCodec
from adapters.base import StreamDecoder, Target, WireRequest
from adapters.canonical import (
    CanonicalError,
    ChatRequest,
    ChatResponse,
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
)
from adapters.gemini.codec import GeminiCodec
from adapters.gemini.request import _embed_inputs
from adapters.wirekit.errors import unsupported
from adapters.wirekit.jsonio import decode_upstream, encode


class _Statistics(msgspec.Struct):
    token_count: float = 0


class _Values(msgspec.Struct):
    values: list[float]
    statistics: _Statistics = msgspec.field(default_factory=_Statistics)


class _Prediction(msgspec.Struct):
    embeddings: _Values


class _PredictResponse(msgspec.Struct):
    predictions: list[_Prediction]


VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"
_ANTHROPIC = AnthropicCodec()


def _claude(target: Target) -> bool:
    return target.options.get("publisher") == "anthropic"


class VertexCodec(GeminiCodec):
    name = "vertex"
    # Counted here, not by Vertex: its countTokens differs per publisher
    # (a Claude model's is Anthropic-shaped).
    native: frozenset[str] = frozenset()

    # --- Claude on Vertex -------------------------------------------------------------

    def encode_chat(self, request_: ChatRequest, target: Target) -> WireRequest:
        if not _claude(target):
            return super().encode_chat(request_, target)
        body = anthropic_request.build(request_, target.provider_model)
        out: dict[str, Any] = msgspec.to_builtins(body)
        del out["model"]  # the model is in the URL
        out["anthropic_version"] = str(target.options.get("anthropic_version", VERTEX_ANTHROPIC_VERSION))
        action = "streamRawPredict" if request_.stream else "rawPredict"
        return self._wire(target, action, encode(out))

    def decode_chat(self, body: bytes, target: Target) -> ChatResponse:
        if _claude(target):
            return _ANTHROPIC.decode_chat(body, target)
        return super().decode_chat(body, target)

    def stream_decoder(self, target: Target) -> StreamDecoder:
        if _claude(target):
            return _ANTHROPIC.stream_decoder(target)
        return super().stream_decoder(target)

    def normalise_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> CanonicalError:
        # Claude's own errors are Anthropic-shaped; Vertex's (auth, quota)
        # are Google-shaped.
        if b'"type":"error"' in body.replace(b" ", b""):
            return _ANTHROPIC.normalise_error(status, body, headers)
        return super().normalise_error(status, body, headers)

    def url(self, target: Target, action: str) -> str:
        opts = target.options
        project = opts.get("project")
        # Express mode: an API key and no project (/v1/publishers/...), as a
        # caller the proxy intercepts may address it.
        express = bool(opts.get("express"))
        if not project and not express:
            raise unsupported(self.name, "the provider config needs options.project")
        location = str(opts.get("location", "us-central1"))
        publisher = str(opts.get("publisher", "google"))
        version = str(opts.get("api_version", "v1"))  # v1beta1: what the google-genai SDK calls
        if target.base_url:
            base = target.base_url.rstrip("/")
        elif location == "global" or not project:
            base = "https://aiplatform.googleapis.com"
        else:
            base = f"https://{location}-aiplatform.googleapis.com"
        scope = f"projects/{project}/locations/{location}/" if project else ""
        return f"{base}/{version}/{scope}publishers/{publisher}/models/{target.provider_model}:{action}"

    def auth_headers(self, target: Target) -> dict[str, str]:
        return {"authorization": f"Bearer {target.api_key}"} if target.api_key else {}

    def encode_embeddings(self, request_: EmbeddingRequest, target: Target) -> WireRequest:
        ext = (request_.nexus_ext or {}).get("vertex", {})
        # task_type and title apply to every text (a title only with
        # RETRIEVAL_DOCUMENT, as Vertex says); autoTruncate false makes an
        # over-long text an error rather than cut.
        shared = {k: ext[k] for k in ("task_type", "title") if k in ext}
        instances = [{"content": t, **shared} for t in _embed_inputs(request_)]
        params: dict[str, Any] = {"outputDimensionality": request_.dimensions} if request_.dimensions else {}
        if "auto_truncate" in ext:
            params["autoTruncate"] = bool(ext["auto_truncate"])
        body = {"instances": instances, **({"parameters": params} if params else {})}
        return self._wire(target, "predict", encode(body))

    def decode_embeddings(self, body: bytes, target: Target) -> EmbeddingResponse:
        parsed = decode_upstream(body, _PredictResponse, self.name)
        tokens = int(sum(p.embeddings.statistics.token_count for p in parsed.predictions))
        return EmbeddingResponse(
            data=[
                Embedding(index=i, embedding=p.embeddings.values) for i, p in enumerate(parsed.predictions)
            ],
            model=target.provider_model,
            usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
        )
