"""The caller grammars as pure functions (ingress/translate): Responses
requests to canonical, canonical answers to Responses / OpenAI JSON with
the wire-required fields the canonical types omit, and each grammar's
error shape.  Table-driven, whole structures compared."""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec
import pytest

from adapters.base import CodecError
from adapters.canonical import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Choice,
    ChunkChoice,
    CompletionTokensDetails,
    Delta,
    FunctionCall,
    FunctionCallDelta,
    FunctionDef,
    ImagePart,
    ImageURL,
    JSONSchemaSpec,
    Message,
    PromptTokensDetails,
    ResponseFormat,
    ResponseMessage,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoiceFunction,
    ToolChoiceNamed,
    Usage,
)
from ingress.translate import openai_chat
from ingress.translate.anthropic_messages import ANTHROPIC_MESSAGES
from ingress.translate.grammar import Failure
from ingress.translate.openai_chat import OPENAI_CHAT
from ingress.translate.responses import RESPONSES, Untranslatable, decode_request
from ingress.translate.responses_out import ResponsesEvents, to_response

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}

DECODE = [
    pytest.param(
        {"model": "m", "input": "hi", "instructions": "be brief", "max_output_tokens": 50},
        ChatRequest(
            model="m",
            messages=[Message(role="system", content="be brief"), Message(role="user", content="hi")],
            max_completion_tokens=50,
        ),
        id="string_input+instructions",
    ),
    pytest.param(
        {
            "model": "m",
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "what is this"},
                        {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
                    ],
                }
            ],
        },
        ChatRequest(
            model="m",
            messages=[
                Message(
                    role="user",
                    content=[
                        TextPart(text="what is this"),
                        ImagePart(image_url=ImageURL(url="data:image/png;base64,AAAA", detail="low")),
                    ],
                )
            ],
        ),
        id="image_input",
    ),
    pytest.param(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "weather?"},
                {
                    "type": "function_call",
                    "call_id": "c1",
                    "name": "get_weather",
                    "arguments": '{"city":"Paris"}',
                },
                {"type": "function_call_output", "call_id": "c1", "output": "21"},
            ],
            "tools": [{"type": "function", "name": "get_weather", "parameters": SCHEMA, "strict": True}],
            "tool_choice": {"type": "function", "name": "get_weather"},
        },
        ChatRequest(
            model="m",
            messages=[
                Message(role="user", content="weather?"),
                Message(
                    role="assistant",
                    tool_calls=[
                        ToolCall(
                            id="c1", function=FunctionCall(name="get_weather", arguments='{"city":"Paris"}')
                        )
                    ],
                ),
                Message(role="tool", tool_call_id="c1", content="21"),
            ],
            tools=[Tool(function=FunctionDef(name="get_weather", parameters=SCHEMA, strict=True))],
            tool_choice=ToolChoiceNamed(function=ToolChoiceFunction(name="get_weather")),
        ),
        id="function_call_round_trip",
    ),
    pytest.param(
        {
            "model": "m",
            "input": "x",
            "text": {"format": {"type": "json_schema", "name": "w", "schema": SCHEMA, "strict": True}},
            "reasoning": {"effort": "high"},
            "stream": True,
        },
        ChatRequest(
            model="m",
            messages=[Message(role="user", content="x")],
            stream=True,
            response_format=ResponseFormat(
                type="json_schema", json_schema=JSONSchemaSpec(name="w", schema=SCHEMA, strict=True)
            ),
            reasoning_effort="high",
        ),
        id="json_schema+reasoning+stream",
    ),
]


@pytest.mark.parametrize(("body", "expected"), DECODE)
def test_responses_request_to_canonical(body: dict[str, Any], expected: ChatRequest) -> None:
    assert decode_request(json.dumps(body).encode()) == expected


@pytest.mark.parametrize(
    ("body", "what"),
    [
        pytest.param(
            {"model": "m", "input": "x", "previous_response_id": "r"}, "previous_response_id", id="state"
        ),
        pytest.param({"model": "m", "input": "x", "store": True}, "store=true", id="store"),
        pytest.param(
            {"model": "m", "input": "x", "tools": [{"type": "file_search"}]}, "'file_search'", id="tool"
        ),
    ],
)
def test_untranslatable_responses_features_are_named(body: dict[str, Any], what: str) -> None:
    with pytest.raises(Untranslatable) as exc:
        decode_request(json.dumps(body).encode())
    assert what in exc.value.what


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"model": "m"}, id="no_input"),
        pytest.param({"model": "m", "input": [{"type": "mystery"}]}, id="unknown_item"),
        pytest.param({"model": "m", "input": [{"role": "robot", "content": "x"}]}, id="bad_role"),
        pytest.param({"model": "m", "input": "x", "text": {"format": {"type": "xml"}}}, id="bad_format"),
    ],
)
def test_bad_responses_requests_are_400s(body: dict[str, Any]) -> None:
    with pytest.raises(CodecError) as exc:
        decode_request(json.dumps(body).encode())
    assert exc.value.error.status == 400 and not isinstance(exc.value, Untranslatable)


USAGE = Usage(
    prompt_tokens=20,
    completion_tokens=9,
    total_tokens=29,
    prompt_tokens_details=PromptTokensDetails(cached_tokens=5),
    completion_tokens_details=CompletionTokensDetails(reasoning_tokens=3),
)
ANSWER = ChatResponse(
    id="abc",
    model="provider-model",
    created=7,
    choices=[
        Choice(
            index=0,
            message=ResponseMessage(
                content=None,
                reasoning_content="thinking",
                tool_calls=[ToolCall(id="c1", function=FunctionCall(name="f", arguments="{}"))],
            ),
            finish_reason="tool_calls",
        )
    ],
    usage=USAGE,
)


def test_canonical_to_responses_object() -> None:
    out = msgspec.to_builtins(to_response(ANSWER, "caller-model"))
    assert out["output"] == [
        {"type": "reasoning", "id": "rs_abc", "summary": [{"type": "summary_text", "text": "thinking"}]},
        {
            "type": "function_call",
            "id": "fc_abc_0",
            "call_id": "c1",
            "name": "f",
            "arguments": "{}",
            "status": "completed",
        },
    ]
    assert (out["object"], out["status"], out["model"], out["id"]) == (
        "response",
        "completed",
        "caller-model",
        "resp_abc",
    )
    assert out["usage"] == {
        "input_tokens": 20,
        "input_tokens_details": {"cached_tokens": 5},
        "output_tokens": 9,
        "output_tokens_details": {"reasoning_tokens": 3},
        "total_tokens": 29,
    }


def test_openai_json_puts_back_the_fields_canonical_omits() -> None:
    out = msgspec.to_builtins(openai_chat.chat_completion(ANSWER, "caller-model"))
    assert out == {
        "id": "abc",
        "object": "chat.completion",
        "created": 7,
        "model": "caller-model",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "reasoning_content": "thinking",
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                    ],
                },
                "finish_reason": "tool_calls",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": 20,
            "completion_tokens": 9,
            "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 5},
            "completion_tokens_details": {"reasoning_tokens": 3},
        },
    }
    chunk = ChatChunk(
        id="abc",
        model="p",
        choices=[
            ChunkChoice(
                index=0,
                delta=Delta(
                    tool_calls=[ToolCallDelta(index=0, id="c1", function=FunctionCallDelta(name="f"))]
                ),
            )
        ],
    )
    assert msgspec.to_builtins(openai_chat.completion_chunk(chunk, "caller-model")) == {
        "id": "abc",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "caller-model",
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "f"}}]
                },
                "finish_reason": None,
            }
        ],
    }


FAILURE = Failure(429, "rate_limit_error", "rate_limited", "slow down")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            OPENAI_CHAT.error_body(FAILURE),
            {
                "error": {
                    "message": "slow down",
                    "type": "rate_limit_error",
                    "code": "rate_limited",
                    "param": None,
                }
            },
            id="openai",
        ),
        pytest.param(
            ANTHROPIC_MESSAGES.error_body(FAILURE),
            {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}},
            id="anthropic",
        ),
        pytest.param(
            RESPONSES.error_body(FAILURE),
            {
                "error": {
                    "message": "slow down",
                    "type": "rate_limit_error",
                    "code": "rate_limited",
                    "param": None,
                }
            },
            id="responses",
        ),
    ],
)
def test_error_bodies_per_grammar(body: bytes, expected: dict[str, Any]) -> None:
    assert msgspec.json.decode(body) == expected


def _events(raw: bytes) -> list[dict[str, Any]]:
    out = []
    for block in raw.decode().split("\n\n"):
        lines = block.splitlines()
        if len(lines) == 2:
            assert lines[0] == "event: " + json.loads(lines[1][6:])["type"]
            out.append(json.loads(lines[1][6:]))
    return out


def test_responses_stream_events_are_consistent_and_numbered() -> None:
    enc = ResponsesEvents("caller-model")
    chunks = [
        ChatChunk(
            id="x", model="p", choices=[ChunkChoice(index=0, delta=Delta(role="assistant", content=""))]
        ),
        ChatChunk(id="x", model="p", choices=[ChunkChoice(index=0, delta=Delta(content="Hel"))]),
        ChatChunk(id="x", model="p", choices=[ChunkChoice(index=0, delta=Delta(content="lo"))]),
        ChatChunk(id="x", model="p", choices=[ChunkChoice(index=0, delta=Delta(), finish_reason="stop")]),
        ChatChunk(id="x", model="p", choices=[], usage=USAGE),
    ]
    events = _events(b"".join(enc.feed(c) for c in chunks) + enc.finish())
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    done = events[-1]["response"]
    assert done["output"][0]["content"][0]["text"] == "Hello" and done["usage"]["output_tokens"] == 9
    failed = ResponsesEvents("m")
    frames = _events(
        failed.feed(chunks[1]) + failed.error(Failure(502, "api_error", "upstream_error", "boom"))
    )
    assert frames[-1]["type"] == "response.failed"
    assert frames[-1]["response"]["error"] == {"code": "server_error", "message": "boom"}


@pytest.mark.parametrize(
    ("body", "path"),
    [
        pytest.param(
            {"model": "m", "input": [{"type": "function_call", "name": 5}]}, "$.input[0].name", id="item"
        ),
        pytest.param(
            {
                "model": "m",
                "input": [
                    {"role": "user", "content": "hi"},
                    {"role": "user", "content": [{"type": "input_text", "text": 1}]},
                ],
            },
            "$.input[1].content[0].text",
            id="part",
        ),
        pytest.param({"model": "m", "input": "x", "tools": [{"name": "f"}]}, "$.tools[0]", id="tool"),
        pytest.param(
            {"model": "m", "input": "x", "reasoning": {"effort": 3}}, "$.reasoning.effort", id="effort"
        ),
    ],
)
def test_responses_type_errors_name_the_field(body: dict[str, Any], path: str) -> None:
    """The request is read as typed structs: a value of the wrong type is a
    validation error at its own path (a 400 naming it), items included."""
    with pytest.raises(msgspec.ValidationError, match=re.escape(f"at `{path}")):
        decode_request(json.dumps(body).encode())
