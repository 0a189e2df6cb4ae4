"""What Nexus writes to its OpenAI callers (chat completions, their stream
chunks, embeddings, errors), as typed structs.

The canonical types are OpenAI-shaped but omit defaults (``object``,
``role``, a tool call's ``type``, zero token counts vanish when encoded);
the official SDKs need those fields, so the answers are these shapes, every
field an SDK requires always present (``content: null``,
``finish_reason: null``) and the optional ones left out when unset.  The
provider side reads the same API with tolerant shapes
(``adapters.openai.wire``).
"""

from __future__ import annotations

from typing import Any

import msgspec

# --- usage ---------------------------------------------------------------------------


class PromptTokensDetails(msgspec.Struct, omit_defaults=True):
    cached_tokens: int
    cache_creation_tokens: int = 0  # ours: Anthropic-style cache writes, when there were any


class CompletionTokensDetails(msgspec.Struct):
    reasoning_tokens: int


class UsageOut(msgspec.Struct, omit_defaults=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None


# --- chat completions ------------------------------------------------------------------


class FunctionOut(msgspec.Struct):
    name: str
    arguments: str


class ToolCallOut(msgspec.Struct, kw_only=True):
    id: str
    type: str = "function"
    function: FunctionOut


class MessageOut(msgspec.Struct, omit_defaults=True, kw_only=True):
    # Required fields are always written; omit_defaults drops only the
    # optional ones left unset.
    role: str
    content: str | None  # required (null when the answer is only tool calls)
    reasoning_content: str | None = None
    tool_calls: list[ToolCallOut] | None = None
    refusal: str | None = None


class ChoiceOut(msgspec.Struct):
    index: int
    message: MessageOut
    finish_reason: str | None
    logprobs: Any = None


class ChatCompletion(msgspec.Struct, omit_defaults=True, kw_only=True):
    id: str
    object: str
    created: int
    model: str
    choices: list[ChoiceOut]
    usage: UsageOut | None = None
    system_fingerprint: str | None = None
    service_tier: str | None = None


# --- stream chunks ------------------------------------------------------------------


class FunctionDeltaOut(msgspec.Struct, omit_defaults=True):
    name: str | None = None
    arguments: str | None = None


class ToolCallDeltaOut(msgspec.Struct, omit_defaults=True):
    index: int
    id: str | None = None
    type: str | None = None  # "function" on the delta that opens a call (the one with its id)
    function: FunctionDeltaOut | None = None


class DeltaOut(msgspec.Struct, omit_defaults=True):
    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDeltaOut] | None = None
    refusal: str | None = None


class ChunkChoiceOut(msgspec.Struct, omit_defaults=True):
    index: int
    delta: DeltaOut
    finish_reason: str | None  # required: null until the last delta
    logprobs: Any = None


class ChatCompletionChunk(msgspec.Struct, omit_defaults=True, kw_only=True):
    id: str
    object: str
    created: int
    model: str
    choices: list[ChunkChoiceOut]
    usage: UsageOut | None = None
    system_fingerprint: str | None = None


# --- embeddings --------------------------------------------------------------------


class EmbeddingOut(msgspec.Struct, kw_only=True):
    object: str = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsageOut(msgspec.Struct):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(msgspec.Struct, kw_only=True):
    object: str = "list"
    data: list[EmbeddingOut]
    model: str
    usage: EmbeddingUsageOut


# --- errors ----------------------------------------------------------------------------


class ErrorOut(msgspec.Struct):
    message: str
    type: str
    code: str
    param: str | None = None


class ErrorEnvelope(msgspec.Struct):
    error: ErrorOut
