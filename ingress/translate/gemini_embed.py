"""The Gemini embeddings grammar, for Google clients calling Nexus's
``/v1beta/models/{model}:embedContent`` and ``:batchEmbedContents``: a
request -> canonical EmbeddingRequest, a canonical EmbeddingResponse ->
``{"embedding": {"values": [...]}}`` or ``{"embeddings": [{"values": [...]}]}``.
Errors are Google's envelope (``gemini_generate.error_body``): the
endpoints use the generateContent grammar for everything but the body.

embedContent becomes one text (``input`` a string), batchEmbedContents a
list (even of one), so a Gemini target is asked the same method the caller
used (``adapters.gemini.request.build_embed``).  ``taskType`` and ``title``
reach a Gemini target only (``nexus_ext``); other providers have no such
field.  What the canonical form cannot carry is a 400 naming the field,
never dropped: parts other than text, and a batch whose requests differ in
taskType, title or outputDimensionality (the canonical request has one of
each)."""

from __future__ import annotations

from typing import Any

import msgspec

from adapters.canonical import EmbeddingRequest, EmbeddingResponse
from adapters.gemini import wire as w
from adapters.wirekit.errors import bad_upstream, unsupported
from adapters.wirekit.jsonio import encode
from ingress.translate.gemini_generate import read_json

EMBED = "embedContent"
BATCH = "batchEmbedContents"


class _Embed(msgspec.Struct, rename="camel"):
    content: w.Content
    model: str | None = None  # required by Google inside a batch; the URL names it here
    task_type: str | None = None
    title: str | None = None
    output_dimensionality: int | None = None


class _Batch(msgspec.Struct, rename="camel"):
    requests: list[_Embed]


def _text(content: w.Content, where: str, api: str) -> str:
    if not content.parts:
        raise unsupported(api, f"{where}.parts must not be empty")
    for i, p in enumerate(content.parts):
        # A part of another kind (inlineData...) has no canonical form: it
        # is refused, so nothing reaches the provider the hooks did not read.
        if p.text is None or p.inline_data is not None or p.file_data is not None:
            raise unsupported(api, f"{where}.parts[{i}] must be text")
    # Several text parts make one embedding of their text.
    text = "\n".join(p.text or "" for p in content.parts)
    if not text.strip():
        raise unsupported(api, f"{where}.parts must carry text")
    return text


def _options(reqs: list[_Embed], api: str) -> tuple[int | None, dict[str, Any]]:
    """The outputDimensionality and the Gemini-only fields the requests share."""
    first = reqs[0]
    for i, r in enumerate(reqs[1:], 1):
        for name, mine, theirs in (
            ("taskType", r.task_type, first.task_type),
            ("title", r.title, first.title),
            ("outputDimensionality", r.output_dimensionality, first.output_dimensionality),
        ):
            if mine != theirs:
                raise unsupported(api, f"requests[{i}].{name} must be the same in every request of a batch")
    if first.output_dimensionality is not None and first.output_dimensionality < 1:
        raise unsupported(api, "outputDimensionality must be at least 1")
    ext = {k: v for k, v in (("task_type", first.task_type), ("title", first.title)) if v is not None}
    return first.output_dimensionality, ext


def _request(texts: str | list[str], reqs: list[_Embed], api: str) -> EmbeddingRequest:
    dims, ext = _options(reqs, api)
    return EmbeddingRequest(
        model="",  # from the URL (address); intake sets it
        input=texts,
        dimensions=dims,
        nexus_ext={"gemini": ext} if ext else None,
    )


def decode_embed(body: bytes) -> EmbeddingRequest:
    """An embedContent body: one text."""
    req = read_json(body, _Embed, EMBED)
    return _request(_text(req.content, "content", EMBED), [req], EMBED)


def decode_batch(body: bytes) -> EmbeddingRequest:
    """A batchEmbedContents body: a list of texts, one per request."""
    batch = read_json(body, _Batch, BATCH)
    if not batch.requests:
        raise unsupported(BATCH, "requests must not be empty")
    texts = [_text(r.content, f"requests[{i}].content", BATCH) for i, r in enumerate(batch.requests)]
    return _request(texts, batch.requests, BATCH)


def _values(resp: EmbeddingResponse) -> list[w.ContentEmbedding]:
    out = []
    for e in sorted(resp.data, key=lambda e: e.index):
        if isinstance(e.embedding, str):  # base64 is never asked for here
            raise bad_upstream(EMBED, "the provider answered base64 embeddings")
        out.append(w.ContentEmbedding(values=e.embedding))
    return out


def embed_response(resp: EmbeddingResponse, model: str) -> bytes:
    """embedContent's answer: the one embedding (``model`` is not part of it)."""
    values = _values(resp)
    if len(values) != 1:
        raise bad_upstream(EMBED, f"the provider answered {len(values)} embeddings for one text")
    return encode(w.EmbedResponse(embedding=values[0]))


def batch_response(resp: EmbeddingResponse, model: str) -> bytes:
    """batchEmbedContents' answer: one embedding per request, in order."""
    return encode(w.EmbedResponse(embeddings=_values(resp)))


__all__ = ["batch_response", "decode_batch", "decode_embed", "embed_response"]
