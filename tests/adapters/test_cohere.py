# ruff: noqa: E501  (golden wire data reads better unwrapped)
"""Golden tests for the Cohere v2 codec."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.base import CodecError
from adapters.canonical import (
    ChatRequest,
    EmbeddingRequest,
    FunctionCall,
    FunctionDef,
    ImagePart,
    ImageURL,
    JSONSchemaSpec,
    Message,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoiceFunction,
    ToolChoiceNamed,
)
from adapters.cohere import CohereCodec
from adapters.wirekit.fold import fold
from tests.adapters.helpers import body, feed_in_pieces, fixture, plain, split_plans, target

CODEC = CohereCodec()
T = target("cohere", "", "command-a-03-2025")
WEATHER = Tool(function=FunctionDef(name="get_weather", description="Weather", parameters={"type": "object"}))
SEARCH = Tool(function=FunctionDef(name="search", parameters={"type": "object"}))


def req(*messages: Message, **kw: Any) -> ChatRequest:
    return ChatRequest(model="c", messages=list(messages), **kw)


ENCODE = [
    pytest.param(
        req(
            Message(role="system", content="Be kind."),
            Message(
                role="user",
                content=[
                    TextPart(text="What is this?"),
                    ImagePart(image_url=ImageURL(url="https://x/y.png", detail="low")),
                ],
            ),
            max_tokens=100,
            top_p=0.9,
            stop="END",
        ),
        {
            "model": "command-a-03-2025",
            "max_tokens": 100,
            "p": 0.9,
            "stop_sequences": ["END"],
            "messages": [
                {"role": "system", "content": "Be kind."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
                    ],
                },
            ],
        },
        id="text+vision->cohere",
    ),
    pytest.param(
        req(
            Message(role="user", content="Weather in Toronto?"),
            Message(
                role="assistant",
                reasoning_content="I will check.",
                tool_calls=[
                    ToolCall(
                        id="get_weather_1",
                        function=FunctionCall(name="get_weather", arguments='{"location":"Toronto"}'),
                    )
                ],
            ),
            Message(role="tool", tool_call_id="get_weather_1", content='{"temp": 20}'),
            tools=[WEATHER, SEARCH],
            tool_choice=ToolChoiceNamed(function=ToolChoiceFunction(name="get_weather")),
            stream=True,
        ),
        {
            "model": "command-a-03-2025",
            "stream": True,
            "tool_choice": "REQUIRED",
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "description": "Weather",
                        "parameters": {"type": "object"},
                    },
                }
            ],
            "messages": [
                {"role": "user", "content": "Weather in Toronto?"},
                {
                    "role": "assistant",
                    "tool_plan": "I will check.",
                    "tool_calls": [
                        {
                            "id": "get_weather_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"location":"Toronto"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "get_weather_1", "content": '{"temp": 20}'},
            ],
        },
        id="tool_roundtrip_named_choice->cohere",
    ),
    pytest.param(
        req(
            Message(role="user", content="JSON please"),
            response_format=ResponseFormat(
                type="json_schema",
                json_schema=JSONSchemaSpec(name="x", schema={"type": "object", "required": ["a"]}),
            ),
            nexus_ext={"cohere": {"thinking": {"type": "enabled", "token_budget": 500}}},
        ),
        {
            "model": "command-a-03-2025",
            "messages": [{"role": "user", "content": "JSON please"}],
            "response_format": {"type": "json_object", "json_schema": {"type": "object", "required": ["a"]}},
            "thinking": {"type": "enabled", "token_budget": 500},
        },
        id="json_schema+thinking->cohere",
    ),
]


@pytest.mark.parametrize(("request_", "expected"), ENCODE)
def test_encode_golden(request_: ChatRequest, expected: dict[str, Any]) -> None:
    wire = CODEC.encode_chat(request_, T)
    assert body(wire.body) == expected
    assert wire.url == "https://api.cohere.com/v2/chat"
    assert wire.headers["authorization"] == "Bearer sk-test"


DECODE = [
    pytest.param(
        "response_text.json",
        {
            "id": "c14c80c3-18eb-4519-9460-6c92edd8cfb4",
            "model": "command-a-03-2025",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "content": "LLMs stand for Large Language Models, which are a type of neural network model."
                    },
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 418, "total_tokens": 423},
        },
        id="cohere->text",
    ),
    pytest.param(
        "response_tool_call.json",
        {
            "id": "b8ab1b2d-4ee1-4b8f-a7a3-4a2b7b55dda8",
            "model": "command-a-03-2025",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "reasoning_content": "I will search for the weather in Toronto.",
                        "tool_calls": [
                            {
                                "id": "get_weather_1byjy32y4hvq",
                                "function": {"name": "get_weather", "arguments": '{"location":"Toronto"}'},
                            }
                        ],
                    },
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {"prompt_tokens": 37, "completion_tokens": 13, "total_tokens": 50},
        },
        id="cohere->tool_call+tool_plan",
    ),
]


@pytest.mark.parametrize(("name", "expected"), DECODE)
def test_decode_golden(name: str, expected: dict[str, Any]) -> None:
    assert plain(CODEC.decode_chat(fixture("cohere", name), T)) == expected


TOOL_STREAM = fixture("cohere", "stream_tool.sse")
TEXT_STREAM = fixture("cohere", "stream_text.sse")


@pytest.mark.parametrize("plan", list(split_plans(TOOL_STREAM)))
def test_tool_stream_folds(plan: str) -> None:
    chunks = feed_in_pieces(CODEC.stream_decoder(T), TOOL_STREAM, split_plans(TOOL_STREAM)[plan])
    assert plain(fold(chunks)) == {
        "id": "29f14a5a-11de-4cae-9800-25e4747408ea",
        "model": "command-a-03-2025",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "reasoning_content": "I will search for the weather in Toronto.",
                    "tool_calls": [
                        {
                            "id": "get_weather_nsz5zm3w56q3",
                            "function": {"name": "get_weather", "arguments": '{\n    "location": "Toronto"}'},
                        }
                    ],
                },
            }
        ],
        "usage": {"prompt_tokens": 37, "completion_tokens": 28, "total_tokens": 65},
    }


def test_text_stream_with_citations_and_cached_tokens() -> None:
    chunks = feed_in_pieces(CODEC.stream_decoder(T), TEXT_STREAM, [17])
    assert plain(fold(chunks)) == {
        "id": "4e3a6f2c",
        "model": "command-a-03-2025",
        "choices": [{"index": 0, "message": {"content": "Hello world"}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 3,
            "completion_tokens": 2,
            "total_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 64},
        },
    }


def test_unknown_stream_events_are_skipped() -> None:
    noisy = TEXT_STREAM.replace(
        b"event: content-end", b'event: hologram\ndata: {"type":"hologram","x":1}\n\nevent: content-end'
    )
    assert (
        fold(feed_in_pieces(CODEC.stream_decoder(T), noisy, [5])).choices[0].message.content == "Hello world"
    )


def test_embeddings() -> None:
    wire = CODEC.encode_embeddings(
        EmbeddingRequest(
            model="e",
            input=["hello", "goodbye"],
            dimensions=256,
            nexus_ext={"cohere": {"input_type": "search_query"}},
        ),
        target("cohere", "", "embed-v4.0"),
    )
    assert wire.url == "https://api.cohere.com/v2/embed"
    assert body(wire.body) == {
        "model": "embed-v4.0",
        "texts": ["hello", "goodbye"],
        "input_type": "search_query",
        "embedding_types": ["float"],
        "output_dimension": 256,
    }
    assert plain(
        CODEC.decode_embeddings(fixture("cohere", "embed.json"), target("cohere", "", "embed-v4.0"))
    ) == {
        "data": [
            {"index": 0, "embedding": [0.016296387, -0.008354187, -0.04699707]},
            {"index": 1, "embedding": [-0.0288, 0.0101, 0.0224]},
        ],
        "model": "embed-v4.0",
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
    }
    with pytest.raises(CodecError):
        CODEC.encode_embeddings(EmbeddingRequest(model="e", input=[[1, 2]]), T)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(429, ("rate_limited", 429, True), id="429"),
        pytest.param(498, ("auth_failed", 502, False), id="498_invalid_token"),
        pytest.param(400, ("invalid_request", 400, False), id="400"),
        pytest.param(503, ("upstream_error", 502, True), id="503"),
    ],
)
def test_normalise_error(status: int, expected: tuple[str, int, bool]) -> None:
    err = CODEC.normalise_error(status, b'{"id":"x","message":"secret prompt echo"}', {})
    assert (err.code, err.status, err.retryable) == expected
    assert "secret" not in err.message
