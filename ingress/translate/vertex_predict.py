"""Vertex AI's text embeddings, for callers the proxy intercepts:
``POST .../publishers/google/models/{model}:predict`` with
``{"instances": [{"content", "task_type", "title"}], "parameters":
{"outputDimensionality", "autoTruncate"}}`` -> a canonical
EmbeddingRequest (one text per instance), and a canonical answer ->
``{"predictions": [{"embeddings": {"values": [...]}}]}``.  Errors are
Google's envelope (``gemini_generate.error_body``).

The request is sent again by the vertex codec (``encode_embeddings``), so
what the canonical form cannot carry is a 400 naming the field, never
dropped: an instance with another field (an image or a video: a
multimodal model's, which the hooks cannot read), and instances whose
task_type or title differ (the canonical request has one of each)."""

from __future__ import annotations

from typing import Any

import msgspec

from adapters.canonical import EmbeddingRequest, EmbeddingResponse
from adapters.wirekit.errors import bad_upstream, unsupported
from adapters.wirekit.jsonio import DECODE_ERRORS, encode, shape_error

API = "predict"


class _Instance(msgspec.Struct, forbid_unknown_fields=True):
    content: str
    task_type: str | None = None
    title: str | None = None


class _Parameters(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    output_dimensionality: int | None = None
    auto_truncate: bool | None = None


class _Predict(msgspec.Struct, forbid_unknown_fields=True):
    instances: list[_Instance]
    parameters: _Parameters | None = None


def decode(body: bytes) -> EmbeddingRequest:
    """A predict body of a text embedding model; CodecError (400) else."""
    try:
        req = msgspec.json.decode(body, type=_Predict)
    except msgspec.ValidationError as e:
        raise unsupported(
            API, f"invalid request body ({shape_error(e)}); instances carry text content only"
        ) from None
    except DECODE_ERRORS:
        raise unsupported(API, "invalid request body (not JSON)") from None
    if not req.instances:
        raise unsupported(API, "instances must not be empty")
    first = req.instances[0]
    for i, inst in enumerate(req.instances):
        if not inst.content.strip():
            raise unsupported(API, f"instances[{i}].content must carry text")
        if (inst.task_type, inst.title) != (first.task_type, first.title):
            raise unsupported(API, f"instances[{i}]: task_type and title must be the same in every instance")
    params = req.parameters or _Parameters()
    if params.output_dimensionality is not None and params.output_dimensionality < 1:
        raise unsupported(API, "parameters.outputDimensionality must be at least 1")
    ext: dict[str, Any] = {
        k: v
        for k, v in (
            ("task_type", first.task_type),
            ("title", first.title),
            ("auto_truncate", params.auto_truncate),
        )
        if v is not None
    }
    return EmbeddingRequest(
        model="",  # from the URL; intake sets it
        input=[inst.content for inst in req.instances],
        dimensions=params.output_dimensionality,
        nexus_ext={"vertex": ext} if ext else None,
    )


def predict_response(resp: EmbeddingResponse, model: str) -> bytes:
    """predict's answer: one prediction per instance, in order."""
    out = []
    for e in sorted(resp.data, key=lambda e: e.index):
        if isinstance(e.embedding, str):  # base64 is never asked for here
            raise bad_upstream(API, "the provider answered base64 embeddings")
        out.append({"embeddings": {"values": e.embedding}})
    return encode({"predictions": out})


__all__ = ["API", "decode", "predict_response"]
