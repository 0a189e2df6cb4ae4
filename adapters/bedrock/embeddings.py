"""Bedrock embeddings through InvokeModel: Amazon Titan Text Embeddings
(one text per call) and Cohere Embed (a list per call).  The body shape
follows the model family named in the model id."""

from __future__ import annotations

from typing import Any

import msgspec

from adapters.canonical import Embedding, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage
from adapters.wirekit.errors import unsupported
from adapters.wirekit.jsonio import decode_upstream

P = "bedrock"


class _Titan(msgspec.Struct):
    embedding: list[float]
    inputTextTokenCount: int = 0  # the wire name


class _Cohere(msgspec.Struct):
    embeddings: list[list[float]]


def family(model: str) -> str:
    if "titan-embed" in model:
        return "titan"
    if "cohere.embed" in model:
        return "cohere"
    raise unsupported(P, f"no embeddings body is known for model {model!r} (Titan or Cohere Embed)")


def _texts(req: EmbeddingRequest) -> list[str]:
    if isinstance(req.input, str):
        return [req.input]
    if all(isinstance(x, str) for x in req.input):
        return [x for x in req.input if isinstance(x, str)]
    raise unsupported(P, "token-array embedding input is not supported; send text")


def body(req: EmbeddingRequest, model: str) -> dict[str, Any]:
    texts = _texts(req)
    ext = (req.nexus_ext or {}).get("bedrock", {})
    if family(model) == "titan":
        if len(texts) != 1:
            raise unsupported(
                P, "Titan embeds one text per request; send a single input (or use Cohere Embed)"
            )
        out: dict[str, Any] = {"inputText": texts[0]}
        if req.dimensions:
            out["dimensions"] = req.dimensions
        if "normalize" in ext:
            out["normalize"] = bool(ext["normalize"])
        return out
    return {"texts": texts, "input_type": str(ext.get("input_type", "search_document"))}


def decode(raw: bytes, model: str) -> EmbeddingResponse:
    if family(model) == "titan":
        titan = decode_upstream(raw, _Titan, P)
        n = titan.inputTextTokenCount
        return EmbeddingResponse(
            data=[Embedding(index=0, embedding=titan.embedding)],
            model=model,
            usage=EmbeddingUsage(prompt_tokens=n, total_tokens=n),
        )
    cohere = decode_upstream(raw, _Cohere, P)
    # Cohere on Bedrock reports tokens only in a response header.
    return EmbeddingResponse(
        data=[Embedding(index=i, embedding=v) for i, v in enumerate(cohere.embeddings)],
        model=model,
        usage=EmbeddingUsage(),
    )
