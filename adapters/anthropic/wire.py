"""The Anthropic Messages API as msgspec Structs.

Request blocks are a strict tagged union (they are also what Anthropic
clients send to our /v1/messages ingress, where an unknown block is a clear
400).  Response blocks and stream events are decoded loosely, with ``type``
as a plain string, so a block or event type Anthropic adds tomorrow is
skipped with a warning instead of failing the response.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from adapters.canonical import Probability, TokenCount


class CacheControl(msgspec.Struct, omit_defaults=True):
    type: str  # "ephemeral"; no default, so omit_defaults never drops it
    ttl: str | None = None


class Base64Source(msgspec.Struct, tag_field="type", tag="base64"):
    media_type: str
    data: str


class URLSource(msgspec.Struct, tag_field="type", tag="url"):
    url: str


ImageSource = Base64Source | URLSource


class TextBlock(msgspec.Struct, tag_field="type", tag="text", omit_defaults=True):
    text: str
    cache_control: CacheControl | None = None


class ImageBlock(msgspec.Struct, tag_field="type", tag="image", omit_defaults=True):
    source: ImageSource
    cache_control: CacheControl | None = None


class ToolUseBlock(msgspec.Struct, tag_field="type", tag="tool_use", omit_defaults=True):
    id: str
    name: str
    input: Any
    cache_control: CacheControl | None = None


class ToolResultBlock(msgspec.Struct, tag_field="type", tag="tool_result", omit_defaults=True):
    tool_use_id: str
    content: str | list[TextBlock | ImageBlock] | None = None
    is_error: bool | None = None
    cache_control: CacheControl | None = None


class ThinkingBlock(msgspec.Struct, tag_field="type", tag="thinking", omit_defaults=True):
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(msgspec.Struct, tag_field="type", tag="redacted_thinking"):
    data: str


class PlainTextSource(msgspec.Struct, tag_field="type", tag="text"):
    media_type: str
    data: str


class DocumentBlock(msgspec.Struct, tag_field="type", tag="document", omit_defaults=True):
    source: Base64Source | URLSource | PlainTextSource
    title: str | None = None
    cache_control: CacheControl | None = None


RequestBlock = (
    TextBlock
    | ImageBlock
    | DocumentBlock
    | ToolUseBlock
    | ToolResultBlock
    | ThinkingBlock
    | RedactedThinkingBlock
)


class MessageParam(msgspec.Struct):
    role: Literal["user", "assistant"]
    content: str | list[RequestBlock]


class ToolParam(msgspec.Struct, omit_defaults=True):
    name: str
    input_schema: dict[str, Any] = {}
    description: str | None = None
    cache_control: CacheControl | None = None
    type: str | None = None  # "custom" or absent for client tools


class ToolChoiceParam(msgspec.Struct, omit_defaults=True):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class ThinkingParam(msgspec.Struct, omit_defaults=True):
    type: str  # enabled | disabled | adaptive
    budget_tokens: TokenCount | None = None


class RequestMetadata(msgspec.Struct, omit_defaults=True):
    user_id: str | None = None


class MessagesRequest(msgspec.Struct, omit_defaults=True, kw_only=True):
    model: str
    max_tokens: TokenCount
    messages: list[MessageParam]
    system: str | list[TextBlock] | None = None
    temperature: Probability | None = None
    top_p: Probability | None = None
    top_k: TokenCount | None = None
    stop_sequences: list[str] | None = None
    stream: bool | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoiceParam | None = None
    thinking: ThinkingParam | None = None
    metadata: RequestMetadata | None = None
    service_tier: str | None = None


class CountTokensRequest(msgspec.Struct, omit_defaults=True, kw_only=True):
    """``POST /v1/messages/count_tokens``: what a Messages request would send
    as its prompt (no output limit, sampling or streaming)."""

    model: str
    messages: list[MessageParam]
    system: str | list[TextBlock] | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoiceParam | None = None
    thinking: ThinkingParam | None = None


class CountTokensResponse(msgspec.Struct):
    input_tokens: int


# --- responses -----------------------------------------------------------------


class ContentBlock(msgspec.Struct, omit_defaults=True, kw_only=True):
    """Any response content block; which fields are set depends on ``type``
    (text | thinking | redacted_thinking | tool_use | unknown future ones)."""

    type: str
    text: str | None = None
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None


class AnthropicUsage(msgspec.Struct, omit_defaults=True, kw_only=True):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class MessagesResponse(msgspec.Struct, kw_only=True):
    id: str
    type: str = "message"
    role: str = "assistant"
    model: str = ""
    content: list[ContentBlock] = []
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: AnthropicUsage = msgspec.field(default_factory=AnthropicUsage)


class ErrorDetail(msgspec.Struct, omit_defaults=True):
    type: str = "api_error"
    message: str = ""


class ErrorBody(msgspec.Struct):
    error: ErrorDetail
    type: str = "error"


# --- stream events ---------------------------------------------------------------


class StreamDelta(msgspec.Struct, omit_defaults=True, kw_only=True):
    type: str | None = None  # text_delta | input_json_delta | thinking_delta | signature_delta
    text: str | None = None
    partial_json: str | None = None
    thinking: str | None = None
    signature: str | None = None
    stop_reason: str | None = None
    stop_sequence: str | None = None


class StreamEvent(msgspec.Struct, omit_defaults=True, kw_only=True):
    type: str
    message: MessagesResponse | None = None
    index: int | None = None
    content_block: ContentBlock | None = None
    delta: StreamDelta | None = None
    usage: AnthropicUsage | None = None
    error: ErrorDetail | None = None
