"""What Nexus writes to its Anthropic Messages callers, as typed structs:
the stream events (message_start ... message_stop) and the error envelope.

The provider side reads the same API with tolerant shapes
(``adapters.anthropic.wire``: every field optional, unknown blocks kept);
these are the exact shapes the official SDKs expect, every field they
require present (``stop_sequence: null`` included).  The unary response
body is ``adapters.anthropic.wire.MessagesResponse``: one shape both ways.
"""

from __future__ import annotations

from typing import Any

import msgspec

from adapters.anthropic.wire import AnthropicUsage

# --- content blocks as a stream opens them, and their deltas ---------------------


class TextBlockStart(msgspec.Struct, tag_field="type", tag="text"):
    text: str = ""


class ThinkingBlockStart(msgspec.Struct, tag_field="type", tag="thinking"):
    thinking: str = ""
    signature: str = ""


class ToolUseBlockStart(msgspec.Struct, tag_field="type", tag="tool_use"):
    id: str
    name: str
    input: dict[str, Any] = {}


BlockStart = TextBlockStart | ThinkingBlockStart | ToolUseBlockStart


class TextDelta(msgspec.Struct, tag_field="type", tag="text_delta"):
    text: str


class ThinkingDelta(msgspec.Struct, tag_field="type", tag="thinking_delta"):
    thinking: str


class InputJsonDelta(msgspec.Struct, tag_field="type", tag="input_json_delta"):
    partial_json: str


BlockDelta = TextDelta | ThinkingDelta | InputJsonDelta


# --- the events --------------------------------------------------------------------


class StartUsage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0


class StartMessage(msgspec.Struct):
    id: str
    model: str
    type: str = "message"
    role: str = "assistant"
    content: list[Any] = []
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: StartUsage = msgspec.field(default_factory=StartUsage)


class MessageStart(msgspec.Struct, tag_field="type", tag="message_start"):
    message: StartMessage


class ContentBlockStart(msgspec.Struct, tag_field="type", tag="content_block_start"):
    index: int
    content_block: BlockStart


class ContentBlockDelta(msgspec.Struct, tag_field="type", tag="content_block_delta"):
    index: int
    delta: BlockDelta


class ContentBlockStop(msgspec.Struct, tag_field="type", tag="content_block_stop"):
    index: int


class StopDelta(msgspec.Struct):
    stop_reason: str | None
    stop_sequence: str | None = None


class MessageDelta(msgspec.Struct, tag_field="type", tag="message_delta"):
    delta: StopDelta
    usage: AnthropicUsage


class MessageStop(msgspec.Struct, tag_field="type", tag="message_stop"):
    pass


StreamEvent = (
    MessageStart | ContentBlockStart | ContentBlockDelta | ContentBlockStop | MessageDelta | MessageStop
)


# --- errors ------------------------------------------------------------------------


class ErrorDetail(msgspec.Struct):
    type: str
    message: str


class ErrorEnvelope(msgspec.Struct, tag_field="type", tag="error"):
    error: ErrorDetail
