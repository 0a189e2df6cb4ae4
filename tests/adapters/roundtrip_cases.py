"""Canonical answers every provider renderer must carry through
render -> decode unchanged (the original's TestShapeRoundTripIdentity)."""

from __future__ import annotations

import pytest

from adapters.canonical import (
    ChatChunk,
    ChatResponse,
    Choice,
    ChunkChoice,
    CompletionTokensDetails,
    Delta,
    FunctionCall,
    FunctionCallDelta,
    PromptTokensDetails,
    ResponseMessage,
    ToolCall,
    ToolCallDelta,
    Usage,
)

USAGE = Usage(prompt_tokens=120, completion_tokens=40, total_tokens=160)


def response(msg: ResponseMessage, finish: str, usage: Usage = USAGE) -> ChatResponse:
    return ChatResponse(
        id="resp-1",
        model="model-x",
        choices=[Choice(index=0, message=msg, finish_reason=finish)],
        usage=usage,
    )


TEXT = response(ResponseMessage(content="Hello there."), "stop")
LENGTH = response(ResponseMessage(content="Cut"), "length")
TOOLS = response(
    ResponseMessage(
        tool_calls=[
            ToolCall(id="call_a", function=FunctionCall(name="get_weather", arguments='{"city":"Paris"}')),
            ToolCall(id="call_b", function=FunctionCall(name="get_time", arguments='{"tz":"CET"}')),
        ]
    ),
    "tool_calls",
)
REASONING = response(
    ResponseMessage(content="42.", reasoning_content="Think hard."),
    "stop",
    Usage(
        prompt_tokens=120,
        completion_tokens=40,
        total_tokens=160,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=100),
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=30),
    ),
)

RESPONSES = [
    pytest.param(TEXT, id="text"),
    pytest.param(LENGTH, id="length"),
    pytest.param(TOOLS, id="parallel_tool_calls"),
    pytest.param(REASONING, id="reasoning+cached"),
]


def chunk(delta: Delta, finish: str | None = None) -> ChatChunk:
    return ChatChunk(
        id="resp-1", model="model-x", choices=[ChunkChoice(index=0, delta=delta, finish_reason=finish)]
    )


STREAM_TOOLS = [
    chunk(Delta(role="assistant", content="")),
    chunk(Delta(reasoning_content="Plan.")),
    chunk(Delta(content="Checking ")),
    chunk(Delta(content="both.")),
    chunk(
        Delta(
            tool_calls=[
                ToolCallDelta(
                    index=0,
                    id="call_a",
                    type="function",
                    function=FunctionCallDelta(name="get_weather", arguments=""),
                )
            ]
        )
    ),
    chunk(Delta(tool_calls=[ToolCallDelta(index=0, function=FunctionCallDelta(arguments='{"city":'))])),
    chunk(Delta(tool_calls=[ToolCallDelta(index=0, function=FunctionCallDelta(arguments='"Paris"}'))])),
    chunk(
        Delta(
            tool_calls=[
                ToolCallDelta(
                    index=1,
                    id="call_b",
                    type="function",
                    function=FunctionCallDelta(name="get_time", arguments='{"tz":"CET"}'),
                )
            ]
        )
    ),
    chunk(Delta(), "tool_calls"),
    ChatChunk(id="resp-1", model="model-x", choices=[], usage=USAGE),
]
STREAM_TEXT = [
    chunk(Delta(role="assistant", content="")),
    chunk(Delta(content="Héllo ")),
    chunk(Delta(content="world.")),
    chunk(Delta(), "stop"),
    ChatChunk(id="resp-1", model="model-x", choices=[], usage=USAGE),
]
STREAMS = [
    pytest.param(STREAM_TEXT, id="stream_text"),
    pytest.param(STREAM_TOOLS, id="stream_tools+reasoning"),
]
