"""Voyage embeddings: OpenAI-like, with input_type / output_dtype /
truncation from nexus_ext.voyage and dimensions -> output_dimension."""

from __future__ import annotations

from collections.abc import Mapping

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
from adapters.voyage import wire as w
from adapters.wirekit import errors as e
from adapters.wirekit.jsonio import decode_upstream, encode, join_url

DEFAULT_BASE_URL = "https://api.voyageai.com"
INPUT_TYPES = frozenset({"query", "document"})
DTYPES = frozenset({"float", "int8", "uint8", "binary", "ubinary"})


class VoyageCodec(CodecBase):
    name = "voyage"
    capabilities = frozenset({Capability.EMBEDDINGS})

    def encode_chat(self, request: ChatRequest, target: Target) -> WireRequest:
        raise e.not_served(self.name, "chat")

    def decode_chat(self, body: bytes, target: Target) -> ChatResponse:
        raise e.not_served(self.name, "chat")

    def stream_decoder(self, target: Target) -> StreamDecoder:
        raise e.not_served(self.name, "chat")

    def encode_embeddings(self, request: EmbeddingRequest, target: Target) -> WireRequest:
        ext = (request.nexus_ext or {}).get("voyage", {})
        if isinstance(request.input, str):
            texts: str | list[str] = request.input
        elif all(isinstance(x, str) for x in request.input):
            texts = [x for x in request.input if isinstance(x, str)]
        else:
            raise e.unsupported(self.name, "token-array embedding input is not supported; send text")
        input_type = ext.get("input_type")
        if input_type is not None and input_type not in INPUT_TYPES:
            raise e.unsupported(self.name, "nexus_ext.voyage.input_type must be query or document")
        dtype = ext.get("output_dtype")
        if dtype is not None and dtype not in DTYPES:
            raise e.unsupported(self.name, f"nexus_ext.voyage.output_dtype must be one of {sorted(DTYPES)}")
        truncation = ext.get("truncation")
        body = w.EmbedRequest(
            input=texts,
            model=target.provider_model,
            input_type=input_type,
            truncation=bool(truncation) if truncation is not None else None,
            output_dimension=request.dimensions,
            output_dtype=dtype,
            encoding_format="base64" if request.encoding_format == "base64" else None,
        )
        headers = {"content-type": "application/json", **target.headers}
        if target.api_key:
            headers["authorization"] = f"Bearer {target.api_key}"
        return WireRequest(
            url=join_url(target.base_url or DEFAULT_BASE_URL, "/v1/embeddings"),
            headers=headers,
            body=encode(body),
        )

    def decode_embeddings(self, body: bytes, target: Target) -> EmbeddingResponse:
        parsed = decode_upstream(body, w.EmbedResponse, self.name)
        tokens = parsed.usage.total_tokens
        return EmbeddingResponse(
            data=[Embedding(index=d.index, embedding=d.embedding) for d in parsed.data],
            model=parsed.model or target.provider_model,
            usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
        )

    def normalise_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> CanonicalError:
        return e.from_status(self.name, status, None, headers)
