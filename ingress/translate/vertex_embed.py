"""Vertex AI's ``:embedContent`` and ``:batchEmbedContents`` (what the
google-genai SDK calls for a Gemini embedding model on Vertex), for callers
the proxy intercepts: ``{"content": {...}, "embedContentConfig": {...}}``
and ``{"requests": [...]}`` of those.

They are forwarded as sent, once the request hooks read them
(``call/forwarded.py``): their config (task type, title, dimensions,
truncation, OCR and audio extraction for multimodal models) has no
canonical form, and nothing in it is translated.  What the hooks cannot
read is a 400, never forwarded: a part other than text (an image, a PDF,
audio or video), and a field of the request this module does not know.
The decode is the canonical request the texts make (for the record and a
usage estimate)."""

from __future__ import annotations

from typing import Any

import msgspec

from adapters.canonical import EmbeddingRequest
from adapters.gemini import wire as w
from adapters.wirekit.errors import unsupported
from ingress.translate.gemini_generate import read_json

EMBED = "embedContent"
BATCH = "batchEmbedContents"


class _Embed(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    content: w.Content
    embed_content_config: dict[str, Any] | None = None
    # The older spelling, at the top level.
    model: str | None = None
    task_type: str | None = None
    title: str | None = None
    output_dimensionality: int | None = None
    auto_truncate: bool | None = None


class _Batch(msgspec.Struct, forbid_unknown_fields=True):
    requests: list[_Embed]


def _text(content: w.Content, where: str, api: str) -> str:
    if not content.parts:
        raise unsupported(api, f"{where}.parts must not be empty")
    for i, p in enumerate(content.parts):
        # Media (and a part of a kind this grammar does not know): the
        # hooks cannot read it, so it never leaves unscreened.
        if p.text is None or p.inline_data is not None or p.file_data is not None:
            raise unsupported(api, f"{where}.parts[{i}] must be text")
    return "\n".join(p.text or "" for p in content.parts)


def decode_embed(body: bytes) -> EmbeddingRequest:
    req = read_json(body, _Embed, EMBED)
    return EmbeddingRequest(model="", input=_text(req.content, "content", EMBED))


def decode_batch(body: bytes) -> EmbeddingRequest:
    batch = read_json(body, _Batch, BATCH)
    if not batch.requests:
        raise unsupported(BATCH, "requests must not be empty")
    texts = [_text(r.content, f"requests[{i}].content", BATCH) for i, r in enumerate(batch.requests)]
    return EmbeddingRequest(model="", input=texts)


__all__ = ["BATCH", "EMBED", "decode_batch", "decode_embed"]
