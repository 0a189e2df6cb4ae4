"""Cohere API v2 as msgspec Structs.  Content items and stream events are
decoded loosely (``type`` as a string) so new kinds are skipped."""

from __future__ import annotations

from typing import Any

import msgspec


class FunctionCall(msgspec.Struct, omit_defaults=True):
    name: str | None = None
    arguments: str | None = None


class ToolCall(msgspec.Struct):
    # No omit_defaults here or on ToolDef: Cohere requires "type": "function".
    id: str | None = None
    type: str = "function"
    function: FunctionCall | None = None


class ContentItem(msgspec.Struct, omit_defaults=True, kw_only=True):
    type: str | None = None  # text | thinking | image_url | document
    text: str | None = None
    thinking: str | None = None
    image_url: dict[str, Any] | None = None


class ChatMessage(msgspec.Struct, omit_defaults=True, kw_only=True):
    role: str
    content: str | list[ContentItem] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_plan: str | None = None
    tool_call_id: str | None = None


class ToolFunction(msgspec.Struct, omit_defaults=True):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolDef(msgspec.Struct):
    function: ToolFunction
    type: str = "function"


class ResponseFormat(msgspec.Struct, omit_defaults=True):
    type: str  # text | json_object
    json_schema: dict[str, Any] | None = None


class Thinking(msgspec.Struct, omit_defaults=True):
    type: str  # enabled | disabled
    token_budget: int | None = None


class ChatRequest(msgspec.Struct, omit_defaults=True, kw_only=True):
    model: str
    messages: list[ChatMessage]
    stream: bool | None = None
    tools: list[ToolDef] | None = None
    tool_choice: str | None = None  # REQUIRED | NONE
    max_tokens: int | None = None
    temperature: float | None = None
    p: float | None = None
    k: int | None = None
    stop_sequences: list[str] | None = None
    seed: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    response_format: ResponseFormat | None = None
    thinking: Thinking | None = None
    safety_mode: str | None = None


class Tokens(msgspec.Struct, omit_defaults=True):
    input_tokens: float = 0
    output_tokens: float = 0


class CohereUsage(msgspec.Struct, omit_defaults=True):
    billed_units: Tokens | None = None
    tokens: Tokens | None = None
    cached_tokens: float = 0


class AssistantMessage(msgspec.Struct, omit_defaults=True, kw_only=True):
    role: str = "assistant"
    content: list[ContentItem] | None = None
    tool_plan: str | None = None
    tool_calls: list[ToolCall] | None = None


class ChatResponse(msgspec.Struct, omit_defaults=True, kw_only=True):
    id: str = ""
    finish_reason: str | None = None
    message: AssistantMessage | None = None
    usage: CohereUsage | None = None


# --- stream --------------------------------------------------------------------------


class DeltaContent(msgspec.Struct, omit_defaults=True, kw_only=True):
    type: str | None = None
    text: str | None = None
    thinking: str | None = None


class DeltaMessage(msgspec.Struct, omit_defaults=True, kw_only=True):
    content: DeltaContent | list[Any] | None = None
    tool_plan: str | None = None
    tool_calls: ToolCall | list[Any] | None = None


class EventDelta(msgspec.Struct, omit_defaults=True, kw_only=True):
    message: DeltaMessage | None = None
    finish_reason: str | None = None
    usage: CohereUsage | None = None


class StreamEvent(msgspec.Struct, omit_defaults=True, kw_only=True):
    type: str
    id: str | None = None
    index: int | None = None
    delta: EventDelta | None = None


# --- embed -------------------------------------------------------------------------------


class EmbedRequest(msgspec.Struct, omit_defaults=True, kw_only=True):
    model: str
    texts: list[str]
    input_type: str
    embedding_types: list[str]
    output_dimension: int | None = None
    truncate: str | None = None


class EmbedMeta(msgspec.Struct, omit_defaults=True):
    billed_units: Tokens | None = None


class EmbedResponse(msgspec.Struct, omit_defaults=True, kw_only=True):
    id: str = ""
    embeddings: dict[str, list[Any]]
    meta: EmbedMeta | None = None


class ErrorBody(msgspec.Struct, omit_defaults=True):
    message: str | None = None
