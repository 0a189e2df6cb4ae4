# ruff: noqa: E501  (golden wire data reads better unwrapped)
"""Golden tests for the Gemini codec: generateContent bodies, documented
responses, the alt=sse stream, embeddings and errors."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from adapters.base import CodecError, StreamError
from adapters.canonical import (
    AudioPart,
    ChatRequest,
    EmbeddingRequest,
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
from adapters.gemini import GeminiCodec
from adapters.wirekit.fold import fold
from tests.adapters.helpers import body, feed_in_pieces, fixture, plain, split_plans, target

CODEC = GeminiCodec()
T = target("gemini", "", "gemini-2.5-flash")
MEETING = Tool(
    function=FunctionDef(
        name="schedule_meeting",
        description="Schedules a meeting.",
        parameters={
            "type": "object",
            "additionalProperties": False,
            "$schema": "x",
            "properties": {
                "topic": {"type": ["string", "null"]},
                "attendees": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["attendees"],
        },
    )
)
MEETING_WIRE = {
    "name": "schedule_meeting",
    "description": "Schedules a meeting.",
    "parameters": {
        "type": "object",
        "properties": {
            "topic": {"type": "string", "nullable": True},
            "attendees": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["attendees"],
    },
}


def req(*messages: Message, **kw: Any) -> ChatRequest:
    return ChatRequest(model="g", messages=list(messages), **kw)


ENCODE = [
    pytest.param(
        req(
            Message(role="system", content="Be brief."),
            Message(role="user", content="Hi"),
            max_tokens=50,
            temperature=0.5,
            stop=["x"],
            seed=3,
        ),
        {
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
            "generationConfig": {
                "temperature": 0.5,
                "maxOutputTokens": 50,
                "stopSequences": ["x"],
                "seed": 3,
            },
        },
        id="text+system->gemini",
    ),
    pytest.param(
        req(
            Message(role="user", content="Book it"),
            Message(
                role="assistant",
                tool_calls=[
                    ToolCall(
                        id="call_0",
                        function=FunctionCall(name="schedule_meeting", arguments='{"attendees":["Bob"]}'),
                    )
                ],
            ),
            Message(role="tool", tool_call_id="call_0", content='{"ok": true}'),
            Message(role="user", content="and?"),
            tools=[MEETING],
            tool_choice=ToolChoiceNamed(function=ToolChoiceFunction(name="schedule_meeting")),
        ),
        {
            "contents": [
                {"role": "user", "parts": [{"text": "Book it"}]},
                {
                    "role": "model",
                    "parts": [{"functionCall": {"name": "schedule_meeting", "args": {"attendees": ["Bob"]}}}],
                },
                {
                    "role": "user",
                    "parts": [
                        {"functionResponse": {"name": "schedule_meeting", "response": {"ok": True}}},
                        {"text": "and?"},
                    ],
                },
            ],
            "tools": [{"functionDeclarations": [MEETING_WIRE]}],
            "toolConfig": {
                "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["schedule_meeting"]}
            },
        },
        id="tool_roundtrip->gemini",
    ),
    pytest.param(
        req(
            Message(
                role="user",
                content=[
                    TextPart(text="Describe"),
                    ImagePart(image_url=ImageURL(url="data:image/png;base64,iVBORw0KGgo=")),
                    ImagePart(image_url=ImageURL(url="https://example.com/cat.webp")),
                    AudioPart(input_audio=InputAudio(data="UklGRg==", format="wav")),
                ],
            )
        ),
        {
            "contents": [
                {
                    "role": "user",
                    "parts": [
                        {"text": "Describe"},
                        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                        {"fileData": {"fileUri": "https://example.com/cat.webp", "mimeType": "image/webp"}},
                        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
                    ],
                }
            ]
        },
        id="vision+audio->gemini",
    ),
    pytest.param(
        req(
            Message(role="user", content="Recipe"),
            response_format=ResponseFormat(
                type="json_schema",
                json_schema=JSONSchemaSpec(
                    name="r",
                    strict=True,
                    schema={
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"name": {"type": "string"}},
                        "required": ["name"],
                    },
                ),
            ),
        ),
        {
            "contents": [{"role": "user", "parts": [{"text": "Recipe"}]}],
            "generationConfig": {
                "responseMimeType": "application/json",
                "responseSchema": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}},
                    "required": ["name"],
                },
            },
        },
        id="json_schema->gemini",
    ),
    pytest.param(
        req(
            Message(role="user", content="Think"),
            response_format=ResponseFormat(type="json_object"),
            nexus_ext={"gemini": {"thinking_config": {"thinking_budget": 1024, "include_thoughts": True}}},
        ),
        {
            "contents": [{"role": "user", "parts": [{"text": "Think"}]}],
            "generationConfig": {
                "responseMimeType": "application/json",
                "thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": True},
            },
        },
        id="json_object+thinking->gemini",
    ),
]


@pytest.mark.parametrize(("request_", "expected"), ENCODE)
def test_encode_golden(request_: ChatRequest, expected: dict[str, Any]) -> None:
    wire = CODEC.encode_chat(request_, T)
    assert body(wire.body) == expected
    assert (
        wire.url == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    )
    assert wire.headers["x-goog-api-key"] == "sk-test"


def test_stream_url() -> None:
    wire = CODEC.encode_chat(
        req(Message(role="user", content="x"), stream=True),
        target("gemini", "https://generativelanguage.googleapis.com/v1beta", "gemini-2.0-flash"),
    )
    assert wire.url == (
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash"
        ":streamGenerateContent?alt=sse"
    )


def test_a_base_url_with_a_version_names_it() -> None:
    def url(base: str, **options: Any) -> str:
        wire = CODEC.encode_chat(
            req(Message(role="user", content="x")), target("gemini", base, "g", **options)
        )
        return wire.url

    assert url("https://h/v1") == "https://h/v1/models/g:generateContent"
    assert url("https://h/v1beta/") == "https://h/v1beta/models/g:generateContent"
    assert url("https://h") == "https://h/v1beta/models/g:generateContent"
    assert url("https://h/v1", api_version="v1beta") == "https://h/v1beta/models/g:generateContent"


def test_count_tokens_goes_out_as_sent_with_the_providers_model() -> None:
    assert "gemini_count_tokens" in CODEC.native
    contents = [{"parts": [{"text": "hi"}]}]
    wire = CODEC.encode_native(
        "gemini_count_tokens",
        {"generateContentRequest": {"model": "models/alias", "contents": contents}},
        target("gemini", "", "gemini-2.5-flash"),
    )
    assert wire.url.endswith("/v1beta/models/gemini-2.5-flash:countTokens")
    assert wire.headers["x-goog-api-key"] == "sk-test"
    assert body(wire.body) == {
        "generateContentRequest": {"model": "models/gemini-2.5-flash", "contents": contents}
    }
    with pytest.raises(CodecError):
        CODEC.encode_native("messages", {}, target("gemini", "", "g"))


def test_tool_message_without_a_call_is_refused() -> None:
    with pytest.raises(CodecError) as exc:
        CODEC.encode_chat(
            req(Message(role="user", content="x"), Message(role="tool", tool_call_id="nope", content="1")), T
        )
    assert exc.value.error.status == 400


DECODE = [
    pytest.param(
        "response_text.json",
        {
            "id": "fSNWaJfCNqaw1dkP3_SHoQs",
            "model": "gemini-2.0-flash",
            "choices": [
                {
                    "index": 0,
                    "message": {"content": "AI learns patterns from lots of example data."},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 8, "completion_tokens": 189, "total_tokens": 197},
        },
        id="gemini->text",
    ),
    pytest.param(
        "response_function_call.json",
        {
            "id": "",
            "model": "gemini-2.5-flash",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "tool_calls": [
                            {
                                "id": "call_0",
                                "function": {
                                    "name": "schedule_meeting",
                                    "arguments": '{"attendees":["Bob","Alice"],"date":"2025-03-27","time":"10:00","topic":"Q3 planning"}',
                                },
                            }
                        ]
                    },
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150},
        },
        id="gemini->tool_call",
    ),
    pytest.param(
        "response_thinking.json",
        {
            "id": "resp-thinking-1",
            "model": "gemini-2.5-pro",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "content": "The sum of the primes below 20 is 77.",
                        "reasoning_content": "**Evaluating the prime numbers**\n\nI list the primes below 20 and add them.",
                    },
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 1210,
                "completion_tokens": 442,
                "total_tokens": 1652,
                "prompt_tokens_details": {"cached_tokens": 1024},
                "completion_tokens_details": {"reasoning_tokens": 430},
            },
        },
        id="gemini->reasoning+cached",
    ),
]


@pytest.mark.parametrize(("name", "expected"), DECODE)
def test_decode_golden(name: str, expected: dict[str, Any]) -> None:
    assert plain(CODEC.decode_chat(fixture("gemini", name), T)) == expected


def test_decode_unknown_finish_reason_and_blocked_prompt() -> None:
    resp = CODEC.decode_chat(
        b'{"candidates":[{"content":{"parts":[{"text":"x"},{"executableCode":{"code":"1"}}]},'
        b'"finishReason":"NEW_REASON"}]}',
        T,
    )
    assert (resp.choices[0].message.content, resp.choices[0].finish_reason) == ("x", "unknown")
    blocked = CODEC.decode_chat(b'{"promptFeedback":{"blockReason":"SAFETY"}}', T)
    assert plain(blocked.choices) == [
        {"index": 0, "message": {"content": ""}, "finish_reason": "content_filter"}
    ]


STREAM = fixture("gemini", "stream_text.sse")


@pytest.mark.parametrize("plan", list(split_plans(STREAM)))
def test_stream_folds(plan: str) -> None:
    chunks = feed_in_pieces(CODEC.stream_decoder(T), STREAM, split_plans(STREAM)[plan])
    assert plain(fold(chunks)) == {
        "id": "s-1",
        "model": "gemini-2.0-flash",
        "choices": [
            {
                "index": 0,
                "message": {"content": "The quick brown fox jumps over the lazy dog, ünïcödé."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 14, "total_tokens": 23},
    }


def test_stream_tool_calls_thoughts_and_error() -> None:
    data = (
        b'data: {"candidates":[{"content":{"parts":[{"text":"plan","thought":true}]}}]}\n\n'
        b'data: {"candidates":[{"content":{"parts":[{"functionCall":{"name":"a","args":{"x":1}}},'
        b'{"functionCall":{"name":"b","args":{}}}]},"finishReason":"STOP"}],'
        b'"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":3,"thoughtsTokenCount":2,"totalTokenCount":10}}\n\n'
    )
    chunks = feed_in_pieces(CODEC.stream_decoder(T), data, [4])
    assert plain(fold(chunks)) == {
        "id": "",
        "model": "gemini-2.5-flash",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "reasoning_content": "plan",
                    "tool_calls": [
                        {"id": "call_0", "function": {"name": "a", "arguments": '{"x":1}'}},
                        {"id": "call_1", "function": {"name": "b", "arguments": "{}"}},
                    ],
                },
            }
        ],
        "usage": {
            "prompt_tokens": 5,
            "completion_tokens": 5,
            "total_tokens": 10,
            "completion_tokens_details": {"reasoning_tokens": 2},
        },
    }
    dec = CODEC.stream_decoder(T)
    with pytest.raises(StreamError) as exc:
        dec.feed(
            b'data: {"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}\n\n'
        )
    assert (exc.value.error.code, exc.value.error.retryable) == ("upstream_error", True)


EMBED = [
    pytest.param(
        EmbeddingRequest(model="e", input="hello", dimensions=256),
        "embedContent",
        {"content": {"parts": [{"text": "hello"}]}, "outputDimensionality": 256},
        id="single->gemini",
    ),
    pytest.param(
        EmbeddingRequest(
            model="e", input=["a", "b"], nexus_ext={"gemini": {"task_type": "RETRIEVAL_DOCUMENT"}}
        ),
        "batchEmbedContents",
        {
            "requests": [
                {
                    "content": {"parts": [{"text": "a"}]},
                    "model": "models/text-embedding-004",
                    "taskType": "RETRIEVAL_DOCUMENT",
                },
                {
                    "content": {"parts": [{"text": "b"}]},
                    "model": "models/text-embedding-004",
                    "taskType": "RETRIEVAL_DOCUMENT",
                },
            ]
        },
        id="batch->gemini",
    ),
]


@pytest.mark.parametrize(("request_", "action", "expected"), EMBED)
def test_encode_embeddings(request_: EmbeddingRequest, action: str, expected: dict[str, Any]) -> None:
    wire = CODEC.encode_embeddings(request_, target("gemini", "", "text-embedding-004"))
    assert wire.url.endswith(f"/v1beta/models/text-embedding-004:{action}")
    assert body(wire.body) == expected


def test_decode_embeddings() -> None:
    t = target("gemini", "", "text-embedding-004")
    assert plain(CODEC.decode_embeddings(fixture("gemini", "embed_single.json"), t)) == {
        "data": [{"index": 0, "embedding": [0.013168523, -0.008711934, -0.046782676, 0.00069968984]}],
        "model": "text-embedding-004",
        "usage": {},
    }
    batch = CODEC.decode_embeddings(fixture("gemini", "embed_batch.json"), t)
    assert [e.embedding for e in batch.data] == [[0.013168523, -0.008711934], [-0.046782676, 0.00069968984]]
    with pytest.raises(CodecError):
        CODEC.encode_embeddings(EmbeddingRequest(model="e", input=[[1, 2]]), t)


@pytest.mark.parametrize(
    ("status", "wire", "expected"),
    [
        pytest.param(429, fixture("gemini", "error_quota.json"), ("rate_limited", 429, True), id="quota"),
        pytest.param(
            400,
            b'[{"error":{"code":400,"message":"bad","status":"INVALID_ARGUMENT"}}]',
            ("invalid_request", 400, False),
            id="array_body",
        ),
        pytest.param(
            403,
            b'{"error":{"code":403,"message":"denied","status":"PERMISSION_DENIED"}}',
            ("auth_failed", 502, False),
            id="denied",
        ),
        pytest.param(500, b"oops", ("upstream_error", 502, True), id="non_json"),
    ],
)
def test_normalise_error(status: int, wire: bytes, expected: tuple[str, int, bool]) -> None:
    err = CODEC.normalise_error(status, wire, {})
    assert (err.code, err.status, err.retryable) == expected
    assert err.provider_status == status


def test_thought_signature_survives_the_round_trip_through_the_tool_call_id() -> None:
    sig = base64.b64encode(b"\xfb\xff\xbf thought-signature!").decode()
    assert "+" in sig and "/" in sig and sig.endswith("=")
    wire = (
        b'{"candidates":[{"content":{"role":"model","parts":[{"functionCall":{"name":"f","args":{"a":1}},'
        b'"thoughtSignature":"' + sig.encode() + b'"}]},"finishReason":"STOP"}]}'
    )
    call = (CODEC.decode_chat(wire, T).choices[0].message.tool_calls or [])[0]
    assert call.id.startswith("call_0__ts_") and all(c.isalnum() or c in "_-" for c in call.id)
    again = CODEC.encode_chat(
        req(
            Message(role="user", content="go"),
            Message(role="assistant", tool_calls=[call]),
            Message(role="tool", tool_call_id=call.id, content="ok"),
        ),
        T,
    )
    assert body(again.body)["contents"][1:] == [
        {
            "role": "model",
            "parts": [{"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": sig}],
        },
        {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"result": "ok"}}}]},
    ]
    streamed = fold(CODEC.stream_decoder(T).feed(b"data: " + wire + b"\n\n"))
    assert (streamed.choices[0].message.tool_calls or [])[0].id == call.id


def test_native_request_decodes_to_canonical() -> None:
    from tests.adapters.reverse import gemini_request as ingress

    got = ingress.decode_request(
        fixture("gemini", "request_function_calling.json"), "gemini-2.5-flash", stream=True
    )
    assert plain(got) == {
        "model": "gemini-2.5-flash",
        "stream": True,
        "max_tokens": 256,
        "temperature": 0.2,
        "nexus_ext": {"gemini": {"thinking_config": {"thinking_budget": 0}}},
        "tool_choice": {"function": {"name": "schedule_meeting"}},
        "tools": [
            {
                "function": {
                    "name": "schedule_meeting",
                    "description": "Schedules a meeting with specified attendees at a given time and date.",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "attendees": {"type": "array", "items": {"type": "string"}},
                            "date": {"type": "string"},
                            "time": {"type": "string"},
                            "topic": {"type": "string"},
                        },
                        "required": ["attendees", "date", "time", "topic"],
                    },
                }
            }
        ],
        "messages": [
            {"role": "system", "content": "You are a scheduling assistant."},
            {
                "role": "user",
                "content": "Schedule a meeting with Bob and Alice for 03/27/2025 at 10:00 AM about the Q3 planning.",
            },
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "call_1_0",
                        "function": {
                            "name": "schedule_meeting",
                            "arguments": '{"attendees":["Bob","Alice"],"date":"2025-03-27","time":"10:00","topic":"Q3 planning"}',
                        },
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1_0", "content": '{"result":"ok"}'},
        ],
    }


def test_native_request_round_trips_through_the_encoder() -> None:
    from tests.adapters.reverse import gemini_request as ingress

    original = req(
        Message(role="system", content="Be brief."),
        Message(
            role="user",
            content=[
                TextPart(text="Look"),
                ImagePart(image_url=ImageURL(url="data:image/png;base64,iVBORw0KGgo=")),
            ],
        ),
        Message(
            role="assistant",
            content="Calling.",
            tool_calls=[
                ToolCall(
                    id="call_1_0",
                    function=FunctionCall(name="schedule_meeting", arguments='{"attendees":["Bob"]}'),
                )
            ],
        ),
        Message(role="tool", tool_call_id="call_1_0", content='{"ok":true}'),
        tools=[MEETING],
        max_tokens=64,
        temperature=0.1,
        stop=["END"],
        response_format=ResponseFormat(type="json_object"),
    )
    wire = CODEC.encode_chat(original, T)
    back = ingress.decode_request(wire.body, "g")
    assert plain(back.messages) == plain(original.messages)
    assert (back.max_tokens, back.temperature, back.stop, plain(back.response_format)) == (
        64,
        0.1,
        ["END"],
        {"type": "json_object"},
    )
    assert plain(back.tools) == [
        {"function": {**plain(MEETING.function), "parameters": MEETING_WIRE["parameters"]}}
    ]


def test_native_request_rejects_bad_bodies() -> None:
    from tests.adapters.reverse import gemini_request as ingress

    with pytest.raises(CodecError) as exc:
        ingress.decode_request(b'{"contents": "nope"}', "g")
    assert exc.value.error.status == 400


@pytest.mark.parametrize(
    ("model", "effort", "config"),
    [
        pytest.param(
            "gemini-2.5-pro", "medium", {"thinkingBudget": 8192, "includeThoughts": True}, id="2.5_budget"
        ),
        pytest.param(
            "gemini-3-pro-preview", "low", {"thinkingLevel": "low", "includeThoughts": True}, id="3_level"
        ),
        pytest.param("gemini-2.0-flash", "high", None, id="no_thinking_model"),
    ],
)
def test_reasoning_effort_becomes_thinking_config(model: str, effort: str, config: Any) -> None:
    wire = body(
        CODEC.encode_chat(
            req(Message(role="user", content="x"), reasoning_effort=effort), target("gemini", "", model)
        ).body
    )
    assert wire.get("generationConfig", {}).get("thinkingConfig") == config


def test_pydantic_style_schema_is_inlined_for_gemini() -> None:
    # What the OpenAI SDK sends for `response_format=Order` with a nested
    # Pydantic model and an Optional field.
    pydantic_schema = {
        "$defs": {
            "Item": {
                "properties": {
                    "sku": {"title": "Sku", "type": "string"},
                    "qty": {"title": "Qty", "type": "integer"},
                },
                "required": ["sku", "qty"],
                "title": "Item",
                "type": "object",
                "additionalProperties": False,
            }
        },
        "properties": {
            "items": {"items": {"$ref": "#/$defs/Item"}, "title": "Items", "type": "array"},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "Note"},
        },
        "required": ["items", "note"],
        "title": "Order",
        "type": "object",
        "additionalProperties": False,
    }
    rf = ResponseFormat(
        type="json_schema", json_schema=JSONSchemaSpec(name="Order", schema=pydantic_schema, strict=True)
    )
    wire = body(CODEC.encode_chat(req(Message(role="user", content="order"), response_format=rf), T).body)
    assert wire["generationConfig"]["responseSchema"] == {
        "properties": {
            "items": {
                "items": {
                    "properties": {
                        "sku": {"title": "Sku", "type": "string"},
                        "qty": {"title": "Qty", "type": "integer"},
                    },
                    "required": ["sku", "qty"],
                    "title": "Item",
                    "type": "object",
                },
                "title": "Items",
                "type": "array",
            },
            "note": {"title": "Note", "type": "string", "nullable": True},
        },
        "required": ["items", "note"],
        "title": "Order",
        "type": "object",
    }


def test_self_referencing_schema_stops_inlining() -> None:
    tree = {
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/Node"}}},
            }
        },
        "$ref": "#/$defs/Node",
    }
    from adapters.gemini.schema import to_gemini_schema

    out = to_gemini_schema(tree)
    depth = 0
    while "properties" in out:
        out = out["properties"]["kids"]["items"]
        depth += 1
    assert depth == 8 and out == {"type": "object"}
