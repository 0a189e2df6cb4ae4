"""The /v1/messages direction: Anthropic requests -> canonical, canonical
responses and chunk streams -> Anthropic JSON and SSE, checked against the
official anthropic SDK's own stream accumulator."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message as SDKMessage
from anthropic.types import RawMessageStreamEvent
from pydantic import TypeAdapter

from adapters.anthropic.stream import AnthropicStreamDecoder
from adapters.base import CodecError
from adapters.canonical import (
    ChatChunk,
    ChatResponse,
    Choice,
    ChunkChoice,
    Delta,
    FunctionCall,
    FunctionCallDelta,
    PromptTokensDetails,
    ResponseMessage,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from adapters.wirekit.fold import fold
from adapters.wirekit.sse import SSEParser
from ingress.translate import anthropic_messages as ingress
from ingress.translate.grammar import Failure
from tests.adapters.helpers import plain

REQUEST = {
    "model": "claude-sonnet-4-20250514",
    "max_tokens": 1024,
    "system": [{"type": "text", "text": "You are a weather bot.", "cache_control": {"type": "ephemeral"}}],
    "tools": [
        {
            "name": "get_weather",
            "description": "Get the weather",
            "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}},
        }
    ],
    "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    "thinking": {"type": "enabled", "budget_tokens": 2000},
    "stop_sequences": ["###"],
    "metadata": {"user_id": "user-7"},
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this and the weather in SF?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Need weather.", "signature": "sig"},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "SF"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "15C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "boom"}],
                    "is_error": True,
                },
                {"type": "text", "text": "Thanks"},
            ],
        },
    ],
    "stream": True,
}


def test_decode_request_golden() -> None:
    got = ingress.decode_request(msgspec.json.encode(REQUEST))
    assert plain(got) == {
        "model": "claude-sonnet-4-20250514",
        "max_tokens": 1024,
        "stream": True,
        "stop": ["###"],
        "user": "user-7",
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "tools": [
            {
                "function": {
                    "name": "get_weather",
                    "description": "Get the weather",
                    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
                }
            }
        ],
        "nexus_ext": {
            "anthropic": {
                "thinking": {"type": "enabled", "budget_tokens": 2000},
                "cache_control": {"type": "ephemeral"},
            }
        },
        "messages": [
            {"role": "system", "content": "You are a weather bot."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this and the weather in SF?"},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
                ],
            },
            {
                "role": "assistant",
                "reasoning_content": "Need weather.",
                "tool_calls": [
                    {"id": "toolu_1", "function": {"name": "get_weather", "arguments": '{"location":"SF"}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "15C"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: boom"},
            {"role": "user", "content": "Thanks"},
        ],
    }


@pytest.mark.parametrize(
    ("wire", "needle"),
    [
        pytest.param(b'{"model":"c","messages":[]}', "max_tokens", id="missing_max_tokens"),
        pytest.param(
            b'{"model":"c","max_tokens":1,"messages":[{"role":"user","content":[{"type":"hologram"}]}]}',
            "messages[0].content[0].type",  # where, never the caller's value
            id="unknown_block",
        ),
        pytest.param(b"not json", "invalid request body", id="not_json"),
    ],
)
def test_decode_request_rejects_bad_bodies_with_400(wire: bytes, needle: str) -> None:
    with pytest.raises(CodecError) as exc:
        ingress.decode_request(wire)
    assert exc.value.error.status == 400
    assert needle in exc.value.error.message
    assert "hologram" not in exc.value.error.message


RESPONSE = ChatResponse(
    id="chatcmpl-1",
    model="gpt-4o",
    choices=[
        Choice(
            index=0,
            finish_reason="tool_calls",
            message=ResponseMessage(
                content="Let me check.",
                reasoning_content="hmm",
                tool_calls=[
                    ToolCall(
                        id="call_1", function=FunctionCall(name="get_weather", arguments='{"location":"SF"}')
                    )
                ],
            ),
        )
    ],
    usage=Usage(
        prompt_tokens=100,
        completion_tokens=20,
        total_tokens=120,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=60),
    ),
)


def test_encode_response_golden_and_sdk_parses_it() -> None:
    wire = ingress.encode_response(RESPONSE, model="claude-sonnet-4")
    expected = {
        "id": "chatcmpl-1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": ""},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"location": "SF"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 40,
            "output_tokens": 20,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 60,
        },
    }
    assert msgspec.json.decode(wire) == expected
    sdk = SDKMessage.model_validate_json(wire)
    assert sdk.content[2].type == "tool_use" and sdk.content[2].input == {"location": "SF"}


def _chunk(delta: Delta, finish: str | None = None) -> ChatChunk:
    return ChatChunk(
        id="chatcmpl-9", model="gpt-4o", choices=[ChunkChoice(index=0, delta=delta, finish_reason=finish)]
    )


CHUNKS = [
    _chunk(Delta(role="assistant", content="")),
    _chunk(Delta(reasoning_content="Think")),
    _chunk(Delta(reasoning_content="ing.")),
    _chunk(Delta(content="Checking ")),
    _chunk(Delta(content="now.")),
    _chunk(
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
    _chunk(Delta(tool_calls=[ToolCallDelta(index=0, function=FunctionCallDelta(arguments='{"location":'))])),
    _chunk(Delta(tool_calls=[ToolCallDelta(index=0, function=FunctionCallDelta(arguments='"SF"}'))])),
    _chunk(
        Delta(
            tool_calls=[
                ToolCallDelta(
                    index=1,
                    id="call_b",
                    type="function",
                    function=FunctionCallDelta(name="get_time", arguments="{}"),
                )
            ]
        )
    ),
    _chunk(Delta(), "tool_calls"),
    ChatChunk(
        id="chatcmpl-9",
        model="gpt-4o",
        choices=[],
        usage=Usage(prompt_tokens=50, completion_tokens=30, total_tokens=80),
    ),
]


def _encode_stream(chunks: list[ChatChunk]) -> bytes:
    enc = ingress.MessagesStreamEncoder(model="claude-sonnet-4")
    return b"".join(enc.feed(c) for c in chunks) + enc.finish()


def test_stream_encoder_event_grammar() -> None:
    events = SSEParser().feed(_encode_stream(CHUNKS))
    names = [e.event for e in events]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert msgspec.json.decode(events[-2].data) == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"input_tokens": 50, "output_tokens": 30},
    }


def test_stream_encoder_output_accumulates_in_the_official_sdk() -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for ev in SSEParser().feed(_encode_stream(CHUNKS)):
        snapshot = accumulate_event(
            event=adapter.validate_json(ev.data), current_snapshot=snapshot, json_bufs=json_bufs
        )
    assert snapshot is not None
    assert [b.type for b in snapshot.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert snapshot.content[0].thinking == "Thinking."
    assert snapshot.content[1].text == "Checking now."
    assert (snapshot.content[2].name, snapshot.content[2].input) == ("get_weather", {"location": "SF"})
    assert (snapshot.content[3].id, snapshot.content[3].input) == ("call_b", {})
    assert snapshot.stop_reason == "tool_use"
    assert snapshot.usage.output_tokens == 30


def test_stream_round_trip_through_our_anthropic_decoder() -> None:
    dec = AnthropicStreamDecoder()
    folded = fold(dec.feed(_encode_stream(CHUNKS)) + dec.close())
    assert plain(folded.choices) == [
        {
            "index": 0,
            "finish_reason": "tool_calls",
            "message": {
                "content": "Checking now.",
                "reasoning_content": "Thinking.",
                "tool_calls": [
                    {"id": "call_a", "function": {"name": "get_weather", "arguments": '{"location":"SF"}'}},
                    {"id": "call_b", "function": {"name": "get_time", "arguments": "{}"}},
                ],
            },
        }
    ]
    assert plain(folded.usage) == {"prompt_tokens": 50, "completion_tokens": 30, "total_tokens": 80}


def test_empty_stream_still_has_a_complete_grammar() -> None:
    events = SSEParser().feed(_encode_stream([]))
    assert [e.event for e in events] == ["message_start", "message_delta", "message_stop"]


def test_error_body_and_event_frame() -> None:
    """The error envelope by HTTP status, unary and as the mid-stream
    ``event: error`` frame the SDK raises from."""
    failure = Failure(429, "rate_limit_error", "rate_limited", "slow down")
    assert msgspec.json.decode(ingress.error_body(failure)) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow down"},
    }
    assert ingress.MessagesStreamEncoder("m").error(failure) == (
        b'event: error\ndata: {"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}\n\n'
    )
    overloaded = Failure(529, "api_error", "overloaded", "busy")
    assert msgspec.json.decode(ingress.ANTHROPIC_MESSAGES.error_body(overloaded))["error"]["type"] == (
        "overloaded_error"
    )


def test_server_tools_ride_raw_and_come_back_only_on_anthropic() -> None:
    from adapters.anthropic import AnthropicCodec
    from tests.adapters.helpers import body, target

    wire = msgspec.json.encode(
        {
            "model": "c",
            "max_tokens": 100,
            "tools": [
                {"name": "get_weather", "input_schema": {"type": "object"}},
                {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
            ],
            "messages": [{"role": "user", "content": "Weather and news?"}],
        }
    )
    canonical = ingress.decode_request(wire)
    assert [t.function.name for t in canonical.tools or []] == ["get_weather"]
    out = body(AnthropicCodec().encode_chat(canonical, target("anthropic", "", "claude-sonnet-4")).body)
    assert out["tools"] == [
        {"name": "get_weather", "input_schema": {"type": "object"}},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
    ]


def test_pdf_documents_translate_both_ways() -> None:
    from adapters.anthropic import AnthropicCodec
    from tests.adapters.helpers import body, target

    wire = msgspec.json.encode(
        {
            "model": "c",
            "max_tokens": 100,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "document",
                            "title": "report.pdf",
                            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"},
                        },
                        {"type": "text", "text": "Summarise"},
                    ],
                }
            ],
        }
    )
    canonical = ingress.decode_request(wire)
    assert plain(canonical.messages[0].content) == [
        {
            "type": "file",
            "file": {"file_data": "data:application/pdf;base64,JVBERi0x", "filename": "report.pdf"},
        },
        {"type": "text", "text": "Summarise"},
    ]
    out = body(AnthropicCodec().encode_chat(canonical, target("anthropic", "", "claude-sonnet-4")).body)
    assert out["messages"][0]["content"][0] == {
        "type": "document",
        "title": "report.pdf",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"},
    }
