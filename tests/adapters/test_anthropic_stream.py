# ruff: noqa: E501  (golden wire data reads better unwrapped)
"""Anthropic SSE -> canonical chunks, fed whole and in awkward pieces."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.anthropic import AnthropicCodec
from adapters.base import StreamError
from adapters.canonical import ChatChunk
from adapters.wirekit.fold import fold
from tests.adapters.helpers import feed_in_pieces, fixture, plain, split_plans, target

CODEC = AnthropicCodec()
T = target("anthropic", model="claude")

TOOL_STREAM = fixture("anthropic", "stream_tool_use.sse")
THINKING_STREAM = fixture("anthropic", "stream_thinking.sse")

TOOL_FOLDED = {
    "id": "msg_014p7gG3wDgGV9EUtLvnow3U",
    "model": "claude-opus-4-1-20250805",
    "choices": [
        {
            "index": 0,
            "message": {
                "content": "Okay, let's check the weather for San Francisco, CA:",
                "tool_calls": [
                    {
                        "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                        "function": {
                            "name": "get_weather",
                            "arguments": '{"location": "San Francisco, CA", "unit": "fahrenheit"}',
                        },
                    }
                ],
            },
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 472, "completion_tokens": 89, "total_tokens": 561},
}

THINKING_FOLDED = {
    "id": "msg_01...",
    "model": "claude-sonnet-4-20250514",
    "choices": [
        {
            "index": 0,
            "message": {
                "content": "27 * 453 = 12,231",
                "reasoning_content": "Let me solve this step by step:\n\n1. First break down 27 * 453\n2. 453 = 400 + 50 + 3",
            },
            "finish_reason": "stop",
        }
    ],
    "usage": {},
}


def decode(data: bytes, sizes: list[int]) -> list[ChatChunk]:
    return feed_in_pieces(CODEC.stream_decoder(T), data, sizes)


@pytest.mark.parametrize("plan", list(split_plans(TOOL_STREAM)))
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(TOOL_STREAM, TOOL_FOLDED, id="tool_call"),
        pytest.param(THINKING_STREAM, THINKING_FOLDED, id="thinking"),
    ],
)
def test_stream_folds_to_the_unary_answer(data: bytes, expected: dict[str, Any], plan: str) -> None:
    chunks = decode(data, split_plans(data)[plan])
    assert plain(fold(chunks)) == expected


def test_stream_chunk_sequence_is_openai_shaped() -> None:
    chunks = [plain(c) for c in decode(TOOL_STREAM, [len(TOOL_STREAM)])]
    base = {"id": "msg_014p7gG3wDgGV9EUtLvnow3U", "model": "claude-opus-4-1-20250805"}
    assert chunks[0] == {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
    assert chunks[7] == {
        **base,
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": ""},
                        }
                    ]
                },
            }
        ],
    }
    assert chunks[-2] == {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}
    assert chunks[-1] == {
        **base,
        "choices": [],
        "usage": {"prompt_tokens": 472, "completion_tokens": 89, "total_tokens": 561},
    }


def test_unknown_events_and_crlf_are_tolerated() -> None:
    noisy = TOOL_STREAM.replace(
        b"event: ping\n",
        b'event: brand_new_event\ndata: {"type":"brand_new_event","x":1}\n\n: comment\nevent: ping\n',
    ).replace(b"\n", b"\r\n")
    noisy = noisy.replace(
        b'event: content_block_stop\r\ndata: {"type":"content_block_stop","index":0}',
        b'event: content_block_start\r\ndata: {"type":"content_block_start","index":7,'
        b'"content_block":{"type":"hologram","blob":"x"}}\r\n\r\n'
        b'event: content_block_delta\r\ndata: {"type":"content_block_delta","index":7,'
        b'"delta":{"type":"hologram_delta","blob":"y"}}\r\n\r\n'
        b'event: content_block_stop\r\ndata: {"type":"content_block_stop","index":0}',
    )
    assert plain(fold(decode(noisy, [5, 1, 9]))) == TOOL_FOLDED


def test_cache_usage_from_message_start_and_cumulative_message_delta() -> None:
    data = (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","type":"message",'
        b'"role":"assistant","model":"c","content":[],"usage":{"input_tokens":5,"output_tokens":1,'
        b'"cache_read_input_tokens":100,"cache_creation_input_tokens":20}}}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"text","text":"h\xc3\xa9"}}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
        b'"usage":{"output_tokens":12}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    assert plain(fold(decode(data, [1]))) == {
        "id": "m",
        "model": "c",
        "choices": [{"index": 0, "message": {"content": "hé"}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 125,
            "completion_tokens": 12,
            "total_tokens": 137,
            "prompt_tokens_details": {"cached_tokens": 100, "cache_creation_tokens": 20},
        },
    }


def test_structured_output_tool_streams_as_content() -> None:
    data = (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","model":"c","content":[]}}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":'
        b'{"type":"tool_use","id":"toolu_1","name":"nexus_structured_output","input":{}}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":'
        b'{"type":"input_json_delta","partial_json":"{\\"answer\\": "}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":'
        b'{"type":"input_json_delta","partial_json":"\\"42\\"}"}}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"tool_use"},'
        b'"usage":{"output_tokens":3}}\n\n'
    )
    folded = fold(decode(data, [11]))
    assert plain(folded.choices) == [
        {"index": 0, "message": {"content": '{"answer": "42"}'}, "finish_reason": "stop"}
    ]


def test_mid_stream_error_raises_with_the_chunks_before_it() -> None:
    data = (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","model":"c","content":[]}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"partial"}}\n\n'
        b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n'
    )
    decoder = CODEC.stream_decoder(T)
    with pytest.raises(StreamError) as exc:
        decoder.feed(data)
    assert exc.value.error.code == "upstream_error"
    assert exc.value.error.retryable
    assert [plain(c)["choices"][0]["delta"] for c in exc.value.chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "partial"},
    ]


def test_streamed_thinking_signature_is_packed_into_the_first_tool_call_id() -> None:
    data = (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","model":"c","content":[]}}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"AB/c+d=="}}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_9","name":"f","input":{}}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{}"}}\n\n'
    )
    folded = fold(decode(data, [9]))
    assert [c.id for c in folded.choices[0].message.tool_calls or []] == ["toolu_9__ts_AB_c-d"]
