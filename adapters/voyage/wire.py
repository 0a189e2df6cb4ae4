"""Voyage's embeddings API as msgspec Structs."""

from __future__ import annotations

import msgspec


class EmbedRequest(msgspec.Struct, omit_defaults=True, kw_only=True):
    input: str | list[str]
    model: str
    input_type: str | None = None  # query | document
    truncation: bool | None = None
    output_dimension: int | None = None
    output_dtype: str | None = None  # float | int8 | uint8 | binary | ubinary
    encoding_format: str | None = None  # base64


class EmbeddingItem(msgspec.Struct):
    index: int
    embedding: list[float] | str


class VoyageUsage(msgspec.Struct):
    total_tokens: int = 0


class EmbedResponse(msgspec.Struct, kw_only=True):
    data: list[EmbeddingItem]
    model: str = ""
    usage: VoyageUsage = msgspec.field(default_factory=VoyageUsage)
