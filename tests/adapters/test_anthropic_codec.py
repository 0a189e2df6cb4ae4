# ruff: noqa: E501  (golden wire data reads better unwrapped)
"""Golden tests for the Anthropic codec: canonical -> /v1/messages request
bodies, documented responses -> canonical, and error normalisation."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.anthropic import AnthropicCodec
from adapters.base import CodecError
from adapters.canonical import (
    AudioPart,
    ChatRequest,
    FunctionCall,
    FunctionDef,
    ImagePart,
    ImageURL,
    InputAudio,
    JSONSchemaSpec,
    Message,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoiceFunction,
    ToolChoiceNamed,
)
from tests.adapters.helpers import body, fixture, plain, target

CODEC = AnthropicCodec()
T = target("anthropic", "https://api.anthropic.com", "claude-sonnet-4-20250514")
WEATHER = Tool(
    function=FunctionDef(
        name="get_weather",
        description="Get the current weather in a given location",
        parameters={
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    )
)
WEATHER_WIRE = {
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


def req(*messages: Message, **kw: Any) -> ChatRequest:
    return ChatRequest(model="claude", messages=list(messages), **kw)


ENCODE_CASES = [
    pytest.param(
        req(Message(role="user", content="Hello"), max_tokens=100),
        {
            "model": "claude-sonnet-4-20250514",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
        },
        id="text->anthropic",
    ),
    pytest.param(
        req(
            Message(role="system", content="Be terse."),
            Message(role="developer", content="No emoji."),
            Message(role="user", content="Hi"),
            max_completion_tokens=50,
            temperature=0.2,
            stop="END",
            user="u-1",
        ),
        {
            "model": "claude-sonnet-4-20250514",
            "max_tokens": 50,
            "system": "Be terse.\n\nNo emoji.",
            "temperature": 0.2,
            "stop_sequences": ["END"],
            "metadata": {"user_id": "u-1"},
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        },
        id="system_split->anthropic",
    ),
    pytest.param(
        req(Message(role="user", content="Hi")),
        {
            "model": "claude-sonnet-4-20250514",
            "max_tokens": 64000,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        },
        id="max_tokens_synthesised->anthropic",
    ),
    pytest.param(
        req(
            Message(role="user", content="Weather in SF?"),
            max_tokens=10,
            tools=[WEATHER],
            tool_choice=ToolChoiceNamed(function=ToolChoiceFunction(name="get_weather")),
            parallel_tool_calls=False,
        ),
        {
            "model": "claude-sonnet-4-20250514",
            "max_tokens": 10,
            "tools": [WEATHER_WIRE],
            "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Weather in SF?"}]}],
        },
        id="tools_forced->anthropic",
    ),
    pytest.param(
        req(
            Message(role="user", content="Weather in SF and NYC?"),
            Message(
                role="assistant",
                content="Checking.",
                tool_calls=[
                    ToolCall(
                        id="toolu_1", function=FunctionCall(name="get_weather", arguments='{"location":"SF"}')
                    ),
                    ToolCall(id="toolu_2", function=FunctionCall(name="get_weather", arguments="")),
                ],
            ),
            Message(role="tool", tool_call_id="toolu_1", content="15C"),
            Message(role="tool", tool_call_id="toolu_2", content=[TextPart(text="20C")]),
            max_tokens=10,
            tools=[WEATHER],
            tool_choice="required",
        ),
        {
            "model": "claude-sonnet-4-20250514",
            "max_tokens": 10,
            "tools": [WEATHER_WIRE],
            "tool_choice": {"type": "any"},
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Weather in SF and NYC?"}]},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Checking."},
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "get_weather",
                            "input": {"location": "SF"},
                        },
                        {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "15C"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_2",
                            "content": [{"type": "text", "text": "20C"}],
                        },
                    ],
                },
            ],
        },
        id="tool_results_merged->anthropic",
    ),
    pytest.param(
        req(
            Message(
                role="user",
                content=[
                    TextPart(text="What is in these?"),
                    ImagePart(image_url=ImageURL(url="data:image/png;base64,iVBORw0KGgo=", detail="high")),
                    ImagePart(image_url=ImageURL(url="https://upload.wikimedia.org/a.jpg")),
                ],
            ),
            max_tokens=10,
        ),
        {
            "model": "claude-sonnet-4-20250514",
            "max_tokens": 10,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in these?"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                        },
                        {
                            "type": "image",
                            "source": {"type": "url", "url": "https://upload.wikimedia.org/a.jpg"},
                        },
                    ],
                }
            ],
        },
        id="vision->anthropic",
    ),
    pytest.param(
        req(
            Message(role="user", content="List 3 colours"),
            max_tokens=10,
            response_format=ResponseFormat(type="json_object"),
        ),
        {
            "model": "claude-sonnet-4-20250514",
            "max_tokens": 10,
            "system": "Respond with a single valid JSON object and nothing else: no prose, no code fences.",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "List 3 colours"}]}],
        },
        id="json_object->anthropic",
    ),
    pytest.param(
        req(
            Message(role="user", content="Answer"),
            max_tokens=10,
            response_format=ResponseFormat(
                type="json_schema", json_schema=JSONSchemaSpec(name="answer", schema=SCHEMA)
            ),
        ),
        {
            "model": "claude-sonnet-4-20250514",
            "max_tokens": 10,
            "system": "Give your final answer by calling the nexus_structured_output tool; its input is the answer.",
            "tools": [
                {
                    "name": "nexus_structured_output",
                    "description": "Return the final answer as this tool's input.",
                    "input_schema": SCHEMA,
                }
            ],
            "tool_choice": {"type": "tool", "name": "nexus_structured_output"},
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Answer"}]}],
        },
        id="json_schema->anthropic",
    ),
    pytest.param(
        req(
            Message(role="user", content="Answer"),
            max_tokens=20000,
            tools=[WEATHER],
            response_format=ResponseFormat(
                type="json_schema", json_schema=JSONSchemaSpec(name="answer", schema=SCHEMA)
            ),
            nexus_ext={"anthropic": {"thinking": {"type": "enabled", "budget_tokens": 10000}, "top_k": 5}},
        ),
        {
            "model": "claude-sonnet-4-20250514",
            "max_tokens": 20000,
            "thinking": {"type": "enabled", "budget_tokens": 10000},
            "system": "Give your final answer by calling the nexus_structured_output tool; its input is the answer.",
            "tools": [
                WEATHER_WIRE,
                {
                    "name": "nexus_structured_output",
                    "description": "Return the final answer as this tool's input.",
                    "input_schema": SCHEMA,
                },
            ],
            "tool_choice": {"type": "auto"},
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Answer"}]}],
        },
        id="json_schema+thinking+tools->anthropic",
    ),
    pytest.param(
        req(
            Message(role="user", content="Think"),
            stream=True,
            nexus_ext={"anthropic": {"thinking": {"type": "enabled", "budget_tokens": 70000}}},
        ),
        {
            "model": "claude-sonnet-4-20250514",
            "max_tokens": 74096,
            "stream": True,
            "thinking": {"type": "enabled", "budget_tokens": 70000},
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Think"}]}],
        },
        id="thinking_budget_raises_max_tokens->anthropic",
    ),
]


@pytest.mark.parametrize(("request_", "expected"), ENCODE_CASES)
def test_encode_golden(request_: ChatRequest, expected: dict[str, Any]) -> None:
    wire = CODEC.encode_chat(request_, T)
    assert body(wire.body) == expected


def test_encode_url_and_headers() -> None:
    t = target("anthropic", "https://api.anthropic.com/v1/", "claude-3-5-haiku", anthropic_beta="x-beta")
    wire = CODEC.encode_chat(req(Message(role="user", content="Hi")), t)
    assert wire.url == "https://api.anthropic.com/v1/messages"
    assert dict(wire.headers) == {
        "content-type": "application/json",
        "anthropic-version": "2023-06-01",
        "x-api-key": "sk-test",
        "anthropic-beta": "x-beta",
    }
    assert body(wire.body)["max_tokens"] == 8192


@pytest.mark.parametrize(
    ("request_", "needle"),
    [
        pytest.param(req(Message(role="user", content="x"), n=2), "n > 1", id="n2"),
        pytest.param(
            req(Message(role="user", content=[AudioPart(input_audio=InputAudio(data="AA==", format="wav"))])),
            "input_audio",
            id="audio",
        ),
        pytest.param(
            req(
                Message(role="user", content="x"),
                tools=[Tool(function=FunctionDef(name="nexus_structured_output"))],
            ),
            "reserved",
            id="reserved_tool_name",
        ),
        pytest.param(req(Message(role="system", content="only system")), "at least one", id="no_turns"),
        pytest.param(
            req(Message(role="user", content="x"), nexus_ext={"anthropic": {"thinking": {"budget": 1}}}),
            "thinking",
            id="bad_thinking_ext",
        ),
    ],
)
def test_encode_refuses_what_anthropic_cannot_express(request_: ChatRequest, needle: str) -> None:
    with pytest.raises(CodecError) as exc:
        CODEC.encode_chat(request_, T)
    assert exc.value.error.code == "invalid_request"
    assert exc.value.error.status == 400
    assert needle in exc.value.error.message


DECODE_CASES = [
    pytest.param(
        "response_text.json",
        {
            "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
            "model": "claude-3-7-sonnet-20250219",
            "choices": [
                {"index": 0, "message": {"content": "Hi! My name is Claude."}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 2095, "completion_tokens": 503, "total_tokens": 2598},
        },
        id="anthropic->text",
    ),
    pytest.param(
        "response_tool_use.json",
        {
            "id": "msg_01Aq9w938a90dw8q",
            "model": "claude-3-7-sonnet-20250219",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "content": "<thinking>I need to use the get_weather, and the user wants SF, which is likely San "
                        "Francisco, CA.</thinking>",
                        "tool_calls": [
                            {
                                "id": "toolu_01A09q90qw90lq917835lq9",
                                "function": {
                                    "name": "get_weather",
                                    "arguments": '{"location":"San Francisco, CA","unit":"celsius"}',
                                },
                            }
                        ],
                    },
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {"prompt_tokens": 384, "completion_tokens": 86, "total_tokens": 470},
        },
        id="anthropic->tool_call",
    ),
    pytest.param(
        "response_thinking.json",
        {
            "id": "msg_01ThinkExample",
            "model": "claude-sonnet-4-20250514",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "content": "Based on my analysis...",
                        "reasoning_content": "Let me analyze this step by step...",
                    },
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 512, "completion_tokens": 1024, "total_tokens": 1536},
        },
        id="anthropic->reasoning",
    ),
    pytest.param(
        "response_cache.json",
        {
            "id": "msg_01CacheExample",
            "model": "claude-sonnet-4-20250514",
            "choices": [
                {
                    "index": 0,
                    "message": {"content": "The main themes of Pride and Prejudice are..."},
                    "finish_reason": "length",
                }
            ],
            "usage": {
                "prompt_tokens": 188107,
                "completion_tokens": 393,
                "total_tokens": 188500,
                "prompt_tokens_details": {"cache_creation_tokens": 188086},
            },
        },
        id="anthropic->cache_creation_usage",
    ),
]


@pytest.mark.parametrize(("name", "expected"), DECODE_CASES)
def test_decode_golden(name: str, expected: dict[str, Any]) -> None:
    assert plain(CODEC.decode_chat(fixture("anthropic", name), T)) == expected


def test_decode_structured_output_tool_becomes_content() -> None:
    wire = (
        b'{"id":"msg_1","type":"message","role":"assistant","model":"claude","stop_reason":"tool_use",'
        b'"content":[{"type":"text","text":"Here it is."},{"type":"tool_use","id":"toolu_9",'
        b'"name":"nexus_structured_output","input":{"answer":"42"}}],'
        b'"usage":{"input_tokens":10,"output_tokens":5,"cache_read_input_tokens":30}}'
    )
    assert plain(CODEC.decode_chat(wire, T)) == {
        "id": "msg_1",
        "model": "claude",
        "choices": [{"index": 0, "message": {"content": '{"answer":"42"}'}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 40,
            "completion_tokens": 5,
            "total_tokens": 45,
            "prompt_tokens_details": {"cached_tokens": 30},
        },
    }


def test_decode_tolerates_unknown_blocks_and_stop_reasons() -> None:
    wire = (
        b'{"id":"msg_2","type":"message","role":"assistant","model":"claude","stop_reason":"brand_new_reason",'
        b'"content":[{"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{}},'
        b'{"type":"text","text":"ok"}],"usage":{"input_tokens":1,"output_tokens":1}}'
    )
    resp = CODEC.decode_chat(wire, T)
    assert resp.choices[0].message.content == "ok"
    assert resp.choices[0].finish_reason == "unknown"


def test_decode_bad_body_is_a_clean_upstream_error() -> None:
    with pytest.raises(CodecError) as exc:
        CODEC.decode_chat(b'{"id": 5}', T)
    assert (exc.value.error.code, exc.value.error.status) == ("upstream_error", 502)


@pytest.mark.parametrize(
    ("status", "wire", "headers", "expected"),
    [
        pytest.param(
            529,
            fixture("anthropic", "error_overloaded.json"),
            {},
            {
                "code": "upstream_error",
                "message": "anthropic: overloaded_error (HTTP 529)",
                "status": 503,
                "provider_status": 529,
                "retryable": True,
            },
            id="overloaded",
        ),
        pytest.param(
            400,
            fixture("anthropic", "error_invalid.json"),
            {},
            {
                "code": "invalid_request",
                "message": "anthropic: invalid_request_error (HTTP 400)",
                "status": 400,
                "provider_status": 400,
            },
            id="invalid_request",
        ),
        pytest.param(
            429,
            b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}',
            {"retry-after": "7"},
            {
                "code": "rate_limited",
                "message": "anthropic: rate_limit_error (HTTP 429)",
                "status": 429,
                "provider_status": 429,
                "retryable": True,
                "retry_after_s": 7.0,
            },
            id="rate_limited",
        ),
        pytest.param(
            401,
            b'{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}',
            {},
            {
                "code": "auth_failed",
                "message": "anthropic: authentication_error (HTTP 401)",
                "status": 502,
                "provider_status": 401,
            },
            id="auth",
        ),
        pytest.param(
            504,
            b"<html>gateway timeout</html>",
            {},
            {
                "code": "timeout",
                "message": "anthropic: upstream returned HTTP 504",
                "status": 504,
                "provider_status": 504,
                "retryable": True,
            },
            id="non_json_504",
        ),
    ],
)
def test_normalise_error(status: int, wire: bytes, headers: dict[str, str], expected: dict[str, Any]) -> None:
    assert plain(CODEC.normalise_error(status, wire, headers)) == expected


def test_embeddings_are_not_served() -> None:
    from adapters.canonical import EmbeddingRequest

    with pytest.raises(CodecError) as exc:
        CODEC.encode_embeddings(EmbeddingRequest(model="x", input="y"), T)
    assert exc.value.error.code == "endpoint_unsupported"


def test_provider_message_text_never_reaches_the_caller() -> None:
    # A provider's message can quote the prompt; only its type is carried.
    wire = (
        b'{"type":"error","error":{"type":"invalid_request_error","message":"prompt: my SSN is 078-05-1120"}}'
    )
    err = CODEC.normalise_error(400, wire, {})
    assert "078-05-1120" not in err.message and "invalid_request_error" in err.message


THINK_THEN_TOOL = (
    b'{"id":"msg_t","type":"message","role":"assistant","model":"claude","stop_reason":"tool_use",'
    b'"content":[{"type":"thinking","thinking":"Need the weather.","signature":"EqQB+/sigA=="},'
    b'{"type":"tool_use","id":"toolu_01","name":"get_weather","input":{"location":"SF"}}],'
    b'"usage":{"input_tokens":10,"output_tokens":5}}'
)
THINKING_ON = {"anthropic": {"thinking": {"type": "enabled", "budget_tokens": 2048}}}


def test_thinking_signature_round_trips_through_the_tool_call_id() -> None:
    msg = CODEC.decode_chat(THINK_THEN_TOOL, T).choices[0].message
    calls = msg.tool_calls or []
    assert calls[0].id == "toolu_01__ts_EqQB-_sigA"
    follow_up = req(
        Message(role="user", content="Weather in SF?"),
        Message(role="assistant", reasoning_content=msg.reasoning_content, tool_calls=calls),
        Message(role="tool", tool_call_id=calls[0].id, content="15C"),
        max_tokens=4096,
        tools=[WEATHER],
        nexus_ext=THINKING_ON,
    )
    wire = body(CODEC.encode_chat(follow_up, T).body)
    assert wire["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert wire["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Need the weather.", "signature": "EqQB+/sigA=="},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"location": "SF"}},
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "15C"}]},
    ]


def test_thinking_is_turned_off_when_the_signed_block_cannot_be_rebuilt() -> None:
    follow_up = req(
        Message(role="user", content="Weather in SF?"),
        Message(
            role="assistant", tool_calls=[ToolCall(id="toolu_01", function=FunctionCall(name="get_weather"))]
        ),
        Message(role="tool", tool_call_id="toolu_01", content="15C"),
        max_tokens=4096,
        tools=[WEATHER],
        nexus_ext=THINKING_ON,
    )
    assert "thinking" not in body(CODEC.encode_chat(follow_up, T).body)
    # a plain conversation keeps it
    assert "thinking" in body(
        CODEC.encode_chat(req(Message(role="user", content="hi"), nexus_ext=THINKING_ON), T).body
    )


def test_cache_control_marks_tools_system_and_the_last_user_turn() -> None:
    request_ = req(
        Message(role="system", content="Long policy text."),
        Message(role="user", content="first"),
        Message(role="assistant", content="ok"),
        Message(role="user", content="second"),
        max_tokens=10,
        tools=[WEATHER],
        nexus_ext={"anthropic": {"cache_control": {"type": "ephemeral", "ttl": "1h"}}},
    )
    wire = body(CODEC.encode_chat(request_, T).body)
    cc = {"type": "ephemeral", "ttl": "1h"}
    assert wire["system"] == [{"type": "text", "text": "Long policy text.", "cache_control": cc}]
    assert wire["tools"] == [{**WEATHER_WIRE, "cache_control": cc}]
    assert wire["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "first"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
        {"role": "user", "content": [{"type": "text", "text": "second", "cache_control": cc}]},
    ]


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        pytest.param(
            req(Message(role="user", content="x"), max_tokens=5, temperature=1.7, top_p=0.5),
            {"temperature": 1.0, "top_p": 0.5},
            id="openai_temperature_range_clamped",
        ),
        pytest.param(
            req(
                Message(role="user", content="x"),
                max_tokens=5000,
                temperature=0.2,
                top_p=0.5,
                tools=[WEATHER],
                tool_choice="required",
                nexus_ext={"anthropic": {"thinking": {"type": "enabled", "budget_tokens": 1024}, "top_k": 3}},
            ),
            {"top_p": 0.95, "tool_choice": {"type": "auto"}},
            id="thinking_drops_sampling_and_forcing",
        ),
    ],
)
def test_sampling_is_made_acceptable(request_: ChatRequest, expected: dict[str, Any]) -> None:
    wire = body(CODEC.encode_chat(request_, T).body)
    got = {k: wire[k] for k in ("temperature", "top_p", "top_k", "tool_choice") if k in wire}
    assert got == expected


@pytest.mark.parametrize(
    ("model", "effort", "max_tokens", "thinking"),
    [
        pytest.param(
            "claude-sonnet-4-20250514", "high", None, {"type": "enabled", "budget_tokens": 16384}, id="high"
        ),
        pytest.param(
            "claude-opus-4-1",
            "medium",
            3000,
            {"type": "enabled", "budget_tokens": 1976},
            id="budget_below_max_tokens",
        ),
        pytest.param("claude-opus-4-1", "medium", 1500, None, id="too_little_room"),
        pytest.param("claude-3-5-haiku-20241022", "high", None, None, id="model_without_thinking"),
        pytest.param("claude-sonnet-4-5", "minimal", None, None, id="minimal_is_no_thinking"),
    ],
)
def test_reasoning_effort_becomes_thinking(
    model: str, effort: str, max_tokens: int | None, thinking: Any
) -> None:
    r = req(Message(role="user", content="x"), reasoning_effort=effort, max_tokens=max_tokens)
    wire = body(CODEC.encode_chat(r, target("anthropic", "", model)).body)
    assert wire.get("thinking") == thinking
