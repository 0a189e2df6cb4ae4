"""Bedrock Converse / ConverseStream as msgspec Structs (camelCase).  A
ContentBlock is a union expressed as one struct with optional members, as
the API defines it; a block with no member we know is skipped."""

from __future__ import annotations

from typing import Any

import msgspec


class ImageSource(msgspec.Struct, rename="camel", omit_defaults=True):
    bytes: str | None = None  # base64 in JSON
    s3_location: dict[str, str] | None = None


class ImageBlock(msgspec.Struct, rename="camel", omit_defaults=True):
    format: str  # png | jpeg | gif | webp
    source: ImageSource


class ToolUseBlock(msgspec.Struct, rename="camel", omit_defaults=True):
    tool_use_id: str
    name: str
    input: Any = None


class ToolResultContent(msgspec.Struct, rename="camel", omit_defaults=True):
    text: str | None = None
    json: Any = None
    image: ImageBlock | None = None


class ToolResultBlock(msgspec.Struct, rename="camel", omit_defaults=True):
    tool_use_id: str
    content: list[ToolResultContent]
    status: str | None = None  # success | error


class ReasoningText(msgspec.Struct, rename="camel", omit_defaults=True):
    text: str
    signature: str | None = None


class ReasoningContent(msgspec.Struct, rename="camel", omit_defaults=True):
    reasoning_text: ReasoningText | None = None
    redacted_content: str | None = None


class CachePoint(msgspec.Struct):
    type: str  # "default"


DEFAULT_CACHE_POINT = CachePoint(type="default")


class DocumentSource(msgspec.Struct, omit_defaults=True):
    bytes: str | None = None  # base64 in JSON


class DocumentBlock(msgspec.Struct, omit_defaults=True):
    format: str  # pdf | csv | doc | docx | xls | xlsx | html | txt | md
    name: str
    source: DocumentSource


class ContentBlock(msgspec.Struct, rename="camel", omit_defaults=True):
    text: str | None = None
    document: DocumentBlock | None = None
    cache_point: CachePoint | None = None
    image: ImageBlock | None = None
    tool_use: ToolUseBlock | None = None
    tool_result: ToolResultBlock | None = None
    reasoning_content: ReasoningContent | None = None


class BedrockMessage(msgspec.Struct, rename="camel", omit_defaults=True):
    role: str
    content: list[ContentBlock]


class SystemBlock(msgspec.Struct, rename="camel", omit_defaults=True):
    text: str | None = None
    cache_point: CachePoint | None = None


class InferenceConfig(msgspec.Struct, rename="camel", omit_defaults=True):
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop_sequences: list[str] | None = None


class InputSchema(msgspec.Struct):
    json: dict[str, Any]


class ToolSpec(msgspec.Struct, rename="camel", omit_defaults=True):
    name: str
    input_schema: InputSchema
    description: str | None = None


class ToolDef(msgspec.Struct, rename="camel", omit_defaults=True):
    tool_spec: ToolSpec | None = None
    cache_point: CachePoint | None = None


class SpecificTool(msgspec.Struct):
    name: str


class ToolChoice(msgspec.Struct, omit_defaults=True):
    auto: dict[str, Any] | None = None
    any: dict[str, Any] | None = None
    tool: SpecificTool | None = None


class ToolConfig(msgspec.Struct, rename="camel", omit_defaults=True):
    tools: list[ToolDef]
    tool_choice: ToolChoice | None = None


class ConverseRequest(msgspec.Struct, rename="camel", omit_defaults=True):
    messages: list[BedrockMessage]
    system: list[SystemBlock] | None = None
    inference_config: InferenceConfig | None = None
    tool_config: ToolConfig | None = None
    additional_model_request_fields: dict[str, Any] | None = None


class TokenUsage(msgspec.Struct, rename="camel", omit_defaults=True):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_input_tokens: int = 0


class ConverseOutput(msgspec.Struct, omit_defaults=True):
    message: BedrockMessage | None = None


class ConverseResponse(msgspec.Struct, rename="camel", omit_defaults=True):
    output: ConverseOutput
    stop_reason: str | None = None
    usage: TokenUsage | None = None


# --- ConverseStream event payloads ------------------------------------------------
# Each event-stream message names its event in the :event-type header; the
# payload is that member's JSON (plus a "p" padding field we ignore).


class ToolUseStart(msgspec.Struct, rename="camel"):
    tool_use_id: str
    name: str


class BlockStart(msgspec.Struct, rename="camel", omit_defaults=True):
    tool_use: ToolUseStart | None = None


class ToolUseDelta(msgspec.Struct):
    input: str = ""


class ReasoningDelta(msgspec.Struct, omit_defaults=True):
    text: str | None = None
    signature: str | None = None
    redacted_content: str | None = None


class BlockDelta(msgspec.Struct, rename="camel", omit_defaults=True):
    text: str | None = None
    tool_use: ToolUseDelta | None = None
    reasoning_content: ReasoningDelta | None = None


class StreamPayload(msgspec.Struct, rename="camel", omit_defaults=True):
    """The union of every event's fields; which are set depends on the event."""

    role: str | None = None
    content_block_index: int | None = None
    start: BlockStart | None = None
    delta: BlockDelta | None = None
    stop_reason: str | None = None
    usage: TokenUsage | None = None


class ErrorBody(msgspec.Struct, omit_defaults=True):
    type: str | None = msgspec.field(default=None, name="__type")
