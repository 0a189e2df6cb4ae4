# ruff: noqa: E501  (golden wire data reads better unwrapped)
"""Golden tests for Bedrock Converse / ConverseStream, including the AWS
event-stream framing fed in awkward pieces and corrupted on purpose."""

from __future__ import annotations

import struct
import zlib
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from adapters.base import CodecError, StreamError, Target
from adapters.bedrock import BedrockCodec
from adapters.bedrock.eventstream import EventStreamDecoder, encode_message
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
)
from adapters.wirekit.fold import fold
from tests.adapters.helpers import body, feed_in_pieces, fixture, plain, split_plans, target

CODEC = BedrockCodec()
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
T = target("bedrock", "", MODEL, region="us-east-1", signing_time=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))
TOP_SONG = Tool(
    function=FunctionDef(
        name="top_song",
        description="Get the most popular song played on a radio station.",
        parameters={"type": "object", "properties": {"sign": {"type": "string"}}, "required": ["sign"]},
    )
)
TOP_SONG_WIRE = {
    "toolSpec": {
        "name": "top_song",
        "description": "Get the most popular song played on a radio station.",
        "inputSchema": {
            "json": {"type": "object", "properties": {"sign": {"type": "string"}}, "required": ["sign"]}
        },
    }
}
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}


def req(*messages: Message, **kw: Any) -> ChatRequest:
    return ChatRequest(model="b", messages=list(messages), **kw)


ENCODE = [
    pytest.param(
        req(
            Message(role="system", content="You are an app that creates playlists."),
            Message(role="user", content="Create a list of 3 pop songs."),
            max_tokens=512,
            temperature=0.5,
            top_p=0.9,
            stop="###",
        ),
        {
            "system": [{"text": "You are an app that creates playlists."}],
            "messages": [{"role": "user", "content": [{"text": "Create a list of 3 pop songs."}]}],
            "inferenceConfig": {"maxTokens": 512, "temperature": 0.5, "topP": 0.9, "stopSequences": ["###"]},
        },
        id="text->bedrock",
    ),
    pytest.param(
        req(
            Message(role="user", content="What is the most popular song on WZPZ?"),
            Message(
                role="assistant",
                tool_calls=[
                    ToolCall(
                        id="tooluse_1", function=FunctionCall(name="top_song", arguments='{"sign":"WZPZ"}')
                    )
                ],
            ),
            Message(role="tool", tool_call_id="tooluse_1", content="Elemental Hotel"),
            tools=[TOP_SONG],
            tool_choice="required",
        ),
        {
            "messages": [
                {"role": "user", "content": [{"text": "What is the most popular song on WZPZ?"}]},
                {
                    "role": "assistant",
                    "content": [
                        {"toolUse": {"toolUseId": "tooluse_1", "name": "top_song", "input": {"sign": "WZPZ"}}}
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "Elemental Hotel"}]}}
                    ],
                },
            ],
            "toolConfig": {"tools": [TOP_SONG_WIRE], "toolChoice": {"any": {}}},
        },
        id="tool_roundtrip->bedrock",
    ),
    pytest.param(
        req(
            Message(
                role="user",
                content=[
                    TextPart(text="What is this?"),
                    ImagePart(image_url=ImageURL(url="data:image/png;base64,iVBORw0KGgo=")),
                ],
            )
        ),
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"text": "What is this?"},
                        {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}},
                    ],
                }
            ]
        },
        id="vision->bedrock",
    ),
    pytest.param(
        req(
            Message(role="user", content="Where?"),
            response_format=ResponseFormat(
                type="json_schema", json_schema=JSONSchemaSpec(name="loc", schema=SCHEMA)
            ),
            nexus_ext={"bedrock": {"thinking": {"type": "enabled", "budget_tokens": 2048}}},
        ),
        {
            "system": [
                {
                    "text": "Give your final answer by calling the nexus_structured_output tool; its input is the answer."
                }
            ],
            "messages": [{"role": "user", "content": [{"text": "Where?"}]}],
            "toolConfig": {
                "tools": [
                    {
                        "toolSpec": {
                            "name": "nexus_structured_output",
                            "description": "Return the final answer as this tool's input.",
                            "inputSchema": {"json": SCHEMA},
                        }
                    }
                ],
                "toolChoice": {"tool": {"name": "nexus_structured_output"}},
            },
            "additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": 2048}},
        },
        id="json_schema+thinking->bedrock",
    ),
]


@pytest.mark.parametrize(("request_", "expected"), ENCODE)
def test_encode_golden(request_: ChatRequest, expected: dict[str, Any]) -> None:
    assert body(CODEC.encode_chat(request_, T).body) == expected


def test_url_and_sigv4_headers() -> None:
    wire = CODEC.encode_chat(
        req(Message(role="user", content="hi"), stream=True),
        target(
            "bedrock", "", MODEL, region="eu-west-1", signing_time=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
        ),
    )
    assert (
        wire.url
        == "https://bedrock-runtime.eu-west-1.amazonaws.com/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream"
    )
    # target() gives api_key "sk-test" (no colon): a Bedrock API key, sent as bearer.
    assert wire.headers["authorization"] == "Bearer sk-test"
    assert wire.headers["accept"] == "application/vnd.amazon.eventstream"
    signed = CODEC.encode_chat(req(Message(role="user", content="hi")), KEYED)
    assert signed.headers["x-amz-date"] == "20250102T030405Z"
    assert signed.headers["x-amz-security-token"] == "TOKEN"
    assert signed.headers["authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250102/us-east-1/bedrock/aws4_request, "
        "SignedHeaders=accept;content-type;host;x-amz-date;x-amz-security-token, Signature="
    )


KEYED = Target(
    provider="bedrock",
    base_url="",
    provider_model=MODEL,
    api_key="AKIDEXAMPLE:SECRET/KEY+x:TOKEN",
    options={"region": "us-east-1", "signing_time": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)},
)


def test_image_urls_are_refused_with_a_reason() -> None:
    with pytest.raises(CodecError) as exc:
        CODEC.encode_chat(
            req(Message(role="user", content=[ImagePart(image_url=ImageURL(url="https://x/y.png"))])), T
        )
    assert "data: URIs or s3://" in exc.value.error.message


DECODE = [
    pytest.param(
        "converse_text.json",
        {
            "id": "",
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "content": 'Here is a list of 3 pop songs by artists from the United Kingdom:\n\n1. "Bad Habits" by Ed Sheeran'
                    },
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 125, "completion_tokens": 60, "total_tokens": 185},
        },
        id="bedrock->text",
    ),
    pytest.param(
        "converse_tool_use.json",
        {
            "id": "",
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "content": "I'll look up the most popular song on WZPZ.",
                        "tool_calls": [
                            {
                                "id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q",
                                "function": {"name": "top_song", "arguments": '{"sign":"WZPZ"}'},
                            }
                        ],
                    },
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {"prompt_tokens": 375, "completion_tokens": 67, "total_tokens": 442},
        },
        id="bedrock->tool_call",
    ),
    pytest.param(
        "converse_reasoning_cache.json",
        {
            "id": "",
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "content": "The capital of France is Paris.",
                        "reasoning_content": "The user asks for the capital; it is Paris.",
                    },
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 1612,
                "completion_tokens": 40,
                "total_tokens": 1652,
                "prompt_tokens_details": {"cached_tokens": 1500, "cache_creation_tokens": 100},
            },
        },
        id="bedrock->reasoning+cache",
    ),
]


@pytest.mark.parametrize(("name", "expected"), DECODE)
def test_decode_golden(name: str, expected: dict[str, Any]) -> None:
    assert plain(CODEC.decode_chat(fixture("bedrock", name), T)) == expected


# --- the event stream --------------------------------------------------------------


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """A test-local event-stream encoder written from the spec, independent
    of the production one: prelude, prelude CRC, string headers, payload,
    message CRC."""
    hdr = b"".join(
        bytes([len(k)]) + k.encode() + b"\x07" + struct.pack(">H", len(v)) + v.encode()
        for k, v in headers.items()
    )
    total = 12 + len(hdr) + len(payload) + 4
    prelude = struct.pack(">II", total, len(hdr))
    msg = prelude + struct.pack(">I", zlib.crc32(prelude)) + hdr + payload
    return msg + struct.pack(">I", zlib.crc32(msg))


def event(name: str, payload: Any) -> bytes:
    return frame(
        {":event-type": name, ":content-type": "application/json", ":message-type": "event"},
        msgspec.json.encode(payload),
    )


STREAM = b"".join(event(n, p) for n, p in msgspec.json.decode(fixture("bedrock", "stream_tool_events.json")))
STREAM_FOLDED = {
    "id": "",
    "model": MODEL,
    "choices": [
        {
            "index": 0,
            "finish_reason": "tool_calls",
            "message": {
                "content": "I'll look up the top song.",
                "tool_calls": [
                    {
                        "id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q",
                        "function": {"name": "top_song", "arguments": '{"sign": "WZPZ"}'},
                    }
                ],
            },
        }
    ],
    "usage": {
        "prompt_tokens": 475,
        "completion_tokens": 67,
        "total_tokens": 542,
        "prompt_tokens_details": {"cached_tokens": 100},
    },
}


@pytest.mark.parametrize("plan", list(split_plans(STREAM)))
def test_converse_stream_folds(plan: str) -> None:
    chunks = feed_in_pieces(CODEC.stream_decoder(T), STREAM, split_plans(STREAM)[plan])
    assert plain(fold(chunks)) == STREAM_FOLDED


def test_production_encoder_matches_the_spec_encoder() -> None:
    headers = {":event-type": "messageStart", ":message-type": "event"}
    assert encode_message(headers, b'{"role":"assistant"}') == frame(headers, b'{"role":"assistant"}')


def test_all_header_value_types_decode() -> None:
    hdr = (
        b"\x01a\x00"
        + b"\x01b\x01"
        + b"\x01c\x02\xff"
        + b"\x01d\x03\x01\x00"
        + b"\x01e\x04\x00\x00\x01\x00"
        + b"\x01f\x05"
        + (2**40).to_bytes(8, "big")
        + b"\x01g\x06\x00\x02\x00\x01"
        + b"\x01h\x07\x00\x02hi"
        + b"\x01i\x08"
        + (1700000000000).to_bytes(8, "big")
        + b"\x01j\x09"
        + bytes(range(16))
    )
    total = 12 + len(hdr) + 4
    prelude = struct.pack(">II", total, len(hdr))
    msg = prelude + struct.pack(">I", zlib.crc32(prelude)) + hdr
    msg += struct.pack(">I", zlib.crc32(msg))
    (decoded,) = EventStreamDecoder().feed(msg)
    assert {k: (str(v) if k == "j" else v) for k, v in decoded.headers.items()} == {
        "a": True,
        "b": False,
        "c": -1,
        "d": 256,
        "e": 256,
        "f": 2**40,
        "g": b"\x00\x01",
        "h": "hi",
        "i": 1700000000000,
        "j": "00010203-0405-0607-0809-0a0b0c0d0e0f",
    }
    assert decoded.payload == b""


def test_unknown_events_are_skipped() -> None:
    data = (
        event("messageStart", {"role": "assistant"})
        + event("brandNewEvent", {"x": 1})
        + event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"citation": {"x": 1}}})
        + event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "ok"}})
        + event("messageStop", {"stopReason": "whatever_new"})
    )
    folded = fold(feed_in_pieces(CODEC.stream_decoder(T), data, [3]))
    assert plain(folded.choices) == [{"index": 0, "message": {"content": "ok"}, "finish_reason": "unknown"}]


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        pytest.param(lambda b: b[:5] + bytes([b[5] ^ 1]) + b[6:], "prelude CRC", id="prelude_crc"),
        pytest.param(lambda b: b[:-6] + bytes([b[-6] ^ 1]) + b[-5:], "message CRC", id="message_crc"),
    ],
)
def test_corruption_is_an_upstream_error(mutate: Any, needle: str) -> None:
    with pytest.raises(CodecError) as exc:
        CODEC.stream_decoder(T).feed(mutate(event("messageStart", {"role": "assistant"})))
    assert exc.value.error.code == "upstream_error" and needle in exc.value.error.message


def test_truncated_stream_is_reported_at_close() -> None:
    dec = CODEC.stream_decoder(T)
    dec.feed(event("messageStart", {"role": "assistant"})[:-3])
    with pytest.raises(CodecError):
        dec.close()


def test_exception_message_mid_stream() -> None:
    data = event("messageStart", {"role": "assistant"}) + frame(
        {
            ":exception-type": "throttlingException",
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        b'{"message":"Too many tokens, please wait before trying again."}',
    )
    with pytest.raises(StreamError) as exc:
        CODEC.stream_decoder(T).feed(data)
    assert (exc.value.error.code, exc.value.error.status) == ("rate_limited", 429)
    assert len(exc.value.chunks) == 1


@pytest.mark.parametrize(
    ("status", "headers", "wire", "expected"),
    [
        pytest.param(
            429,
            {"x-amzn-ErrorType": "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"},
            fixture("bedrock", "error_throttling.json"),
            ("rate_limited", 429, True),
            id="throttling",
        ),
        pytest.param(
            400,
            {"X-Amzn-ErrorType": "ValidationException"},
            b'{"message":"Malformed input request"}',
            ("invalid_request", 400, False),
            id="validation",
        ),
        pytest.param(
            403,
            {},
            b'{"Message":"User is not authorized"}',
            ("auth_failed", 502, False),
            id="denied_capital_message",
        ),
        pytest.param(
            424,
            {"x-amzn-ErrorType": "ModelErrorException"},
            b"{}",
            ("upstream_error", 502, True),
            id="model_error",
        ),
    ],
)
def test_normalise_error(
    status: int, headers: dict[str, str], wire: bytes, expected: tuple[str, int, bool]
) -> None:
    err = CODEC.normalise_error(status, wire, headers)
    assert (err.code, err.status, err.retryable) == expected


def test_signed_reasoning_round_trips_and_thinking_falls_back() -> None:
    wire = msgspec.json.encode(
        {
            "output": {
                "message": {
                    "role": "assistant",
                    "content": [
                        {
                            "reasoningContent": {
                                "reasoningText": {"text": "Look it up.", "signature": "SiG+/w=="}
                            }
                        },
                        {
                            "toolUse": {
                                "toolUseId": "tooluse_1",
                                "name": "top_song",
                                "input": {"sign": "WZPZ"},
                            }
                        },
                    ],
                }
            },
            "stopReason": "tool_use",
            "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2},
        }
    )
    msg = CODEC.decode_chat(wire, T).choices[0].message
    calls = msg.tool_calls or []
    assert calls[0].id == "tooluse_1__ts_SiG-_w"
    thinking = {"bedrock": {"thinking": {"type": "enabled", "budget_tokens": 1024}}}
    turn = [
        Message(role="user", content="Top song?"),
        Message(role="assistant", reasoning_content=msg.reasoning_content, tool_calls=calls),
        Message(role="tool", tool_call_id=calls[0].id, content="Elemental Hotel"),
    ]
    out = body(CODEC.encode_chat(req(*turn, tools=[TOP_SONG], nexus_ext=thinking), T).body)
    assert out["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"reasoningContent": {"reasoningText": {"text": "Look it up.", "signature": "SiG+/w=="}}},
                {"toolUse": {"toolUseId": "tooluse_1", "name": "top_song", "input": {"sign": "WZPZ"}}},
            ],
        },
        {
            "role": "user",
            "content": [{"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "Elemental Hotel"}]}}],
        },
    ]
    assert out["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    turn[1] = Message(role="assistant", tool_calls=calls)  # the client dropped reasoning_content
    out = body(CODEC.encode_chat(req(*turn, tools=[TOP_SONG], nexus_ext=thinking), T).body)
    assert "additionalModelRequestFields" not in out


def test_streamed_reasoning_signature_is_packed_into_the_first_tool_call_id() -> None:
    data = (
        event("messageStart", {"role": "assistant"})
        + event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "hmm"}}})
        + event(
            "contentBlockDelta",
            {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "QUJD"}}},
        )
        + event(
            "contentBlockStart",
            {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tu_1", "name": "top_song"}}},
        )
        + event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{}"}}})
    )
    folded = fold(feed_in_pieces(CODEC.stream_decoder(T), data, [13]))
    assert folded.choices[0].message.reasoning_content == "hmm"
    assert [c.id for c in folded.choices[0].message.tool_calls or []] == ["tu_1__ts_QUJD"]


def test_titan_and_cohere_embeddings_via_invoke() -> None:
    titan = target("bedrock", "", "amazon.titan-embed-text-v2:0", region="us-east-1")
    wire = CODEC.encode_embeddings(
        EmbeddingRequest(
            model="e", input="hello", dimensions=256, nexus_ext={"bedrock": {"normalize": True}}
        ),
        titan,
    )
    assert (
        wire.url
        == "https://bedrock-runtime.us-east-1.amazonaws.com/model/amazon.titan-embed-text-v2%3A0/invoke"
    )
    assert body(wire.body) == {"inputText": "hello", "dimensions": 256, "normalize": True}
    assert plain(CODEC.decode_embeddings(fixture("bedrock", "titan_embed.json"), titan)) == {
        "data": [{"index": 0, "embedding": [0.0234375, -0.0390625, 0.046875]}],
        "model": "amazon.titan-embed-text-v2:0",
        "usage": {"prompt_tokens": 7, "total_tokens": 7},
    }
    with pytest.raises(CodecError) as exc:
        CODEC.encode_embeddings(EmbeddingRequest(model="e", input=["a", "b"]), titan)
    assert "one text per request" in exc.value.error.message
    cohere = target("bedrock", "", "cohere.embed-english-v3", region="us-east-1")
    assert body(
        CODEC.encode_embeddings(EmbeddingRequest(model="e", input=["hello", "world"]), cohere).body
    ) == {"texts": ["hello", "world"], "input_type": "search_document"}
    assert [
        e.embedding for e in CODEC.decode_embeddings(fixture("bedrock", "cohere_embed.json"), cohere).data
    ] == [[0.041, -0.011], [0.023, 0.035]]
    with pytest.raises(CodecError):
        CODEC.encode_embeddings(
            EmbeddingRequest(model="e", input="x"), target("bedrock", "", "meta.llama3", region="us-east-1")
        )


def test_cache_points_after_system_tools_and_last_user_turn() -> None:
    request_ = req(
        Message(role="system", content="Policy."),
        Message(role="user", content="Top song?"),
        tools=[TOP_SONG],
        nexus_ext={"bedrock": {"cache_point": True}},
    )
    assert body(CODEC.encode_chat(request_, T).body) == {
        "system": [{"text": "Policy."}, {"cachePoint": {"type": "default"}}],
        "messages": [
            {"role": "user", "content": [{"text": "Top song?"}, {"cachePoint": {"type": "default"}}]}
        ],
        "toolConfig": {"tools": [TOP_SONG_WIRE, {"cachePoint": {"type": "default"}}]},
    }
    # An Anthropic client's cache_control (carried by the ingress) asks for the same.
    anthropic_style = req(
        Message(role="user", content="hi"), nexus_ext={"anthropic": {"cache_control": {"type": "ephemeral"}}}
    )
    assert body(CODEC.encode_chat(anthropic_style, T).body)["messages"][0]["content"][-1] == {
        "cachePoint": {"type": "default"}
    }


def test_pdf_document_block() -> None:
    from adapters.canonical import FilePart, FileRef

    msg = Message(
        role="user",
        content=[
            FilePart(
                file=FileRef(file_data="data:application/pdf;base64,JVBERi0x", filename="Q3 report.v2.pdf")
            ),
            TextPart(text="Summarise"),
        ],
    )
    assert body(CODEC.encode_chat(req(msg), T).body)["messages"][0]["content"] == [
        {"document": {"format": "pdf", "name": "Q3 report v2", "source": {"bytes": "JVBERi0x"}}},
        {"text": "Summarise"},
    ]


def test_reasoning_effort_on_claude_becomes_thinking() -> None:
    wire = body(CODEC.encode_chat(req(Message(role="user", content="x"), reasoning_effort="low"), T).body)
    assert "additionalModelRequestFields" not in wire  # claude-3-5-sonnet does not think
    t = target("bedrock", "", "us.anthropic.claude-sonnet-4-20250514-v1:0", region="us-east-1")
    wire = body(CODEC.encode_chat(req(Message(role="user", content="x"), reasoning_effort="low"), t).body)
    assert wire["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": 1024}}
