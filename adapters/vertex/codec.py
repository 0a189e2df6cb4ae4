"""Vertex AI publisher models: the Gemini body codec at
{location}-aiplatform.googleapis.com/v1/projects/{p}/locations/{l}/
publishers/{pub}/models/{m}:{action}, authorised by an OAuth2 access token
(Target.api_key holds the token ingress minted via ``vertex.auth``).
Embeddings use the Vertex ``:predict`` shape."""

from __future__ import annotations

import msgspec

from adapters.base import Target, WireRequest
from adapters.canonical import Embedding, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage
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


class VertexCodec(GeminiCodec):
    name = "vertex"

    def url(self, target: Target, action: str) -> str:
        opts = target.options
        project = opts.get("project")
        if not project:
            raise unsupported(self.name, "the provider config needs options.project")
        location = str(opts.get("location", "us-central1"))
        publisher = str(opts.get("publisher", "google"))
        if target.base_url:
            base = target.base_url.rstrip("/")
        elif location == "global":
            base = "https://aiplatform.googleapis.com"
        else:
            base = f"https://{location}-aiplatform.googleapis.com"
        return (
            f"{base}/v1/projects/{project}/locations/{location}/publishers/{publisher}"
            f"/models/{target.provider_model}:{action}"
        )

    def auth_headers(self, target: Target) -> dict[str, str]:
        return {"authorization": f"Bearer {target.api_key}"} if target.api_key else {}

    def encode_embeddings(self, request_: EmbeddingRequest, target: Target) -> WireRequest:
        ext = (request_.nexus_ext or {}).get("vertex", {})
        instances = [
            {"content": t, **({"task_type": ext["task_type"]} if "task_type" in ext else {})}
            for t in _embed_inputs(request_)
        ]
        params = {"outputDimensionality": request_.dimensions} if request_.dimensions else None
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
