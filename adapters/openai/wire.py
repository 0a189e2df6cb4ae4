"""OpenAI wire shapes that the canonical types do not already cover: the
error envelope, and tolerant chunk/response shapes (OpenAI-compatible
providers omit ids, models or deltas here and there)."""

from __future__ import annotations

from typing import Any

import msgspec

from adapters.canonical import Choice, Delta, Usage


class ErrorBody(msgspec.Struct):
    message: str | None = None
    type: str | None = None
    code: Any = None  # a string at OpenAI, an int at some compatible providers
    param: str | None = None


class ErrorEnvelope(msgspec.Struct):
    error: ErrorBody | str


class ChunkChoiceWire(msgspec.Struct):
    index: int = 0
    delta: Delta | None = None
    finish_reason: str | None = None
    logprobs: Any = None


class ChunkWire(msgspec.Struct):
    id: str = ""
    model: str = ""
    choices: list[ChunkChoiceWire] | None = None
    created: int = 0
    usage: Usage | None = None
    system_fingerprint: str | None = None


class ResponseWire(msgspec.Struct):
    id: str = ""
    model: str = ""
    choices: list[Choice] = []
    created: int = 0
    usage: Usage | None = None
    system_fingerprint: str | None = None
    service_tier: str | None = None


class EmbeddingRequestWire(msgspec.Struct):
    """The embeddings request as it travels.  (``canonical.EmbeddingRequest``
    declares ``input`` as a union of several list types, which msgspec
    cannot decode; this shape can.)"""

    model: str
    input: str | list[str | int | list[int]]
    encoding_format: str | None = None
    dimensions: int | None = None
    user: str | None = None
