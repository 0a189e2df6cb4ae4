"""The OpenAI SSE stream decoder: the same chunks whatever way the bytes are
cut, comments/unknown fields/[DONE] handled, folded into the unary shape."""

from __future__ import annotations

import pytest

from adapters.base import StreamError
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
from adapters.openai import CODEC, OpenAIStreamDecoder
from adapters.openai.sse import SSEEvent, SSEParser
from adapters.wirekit.fold import fold
from tests.adapters.helpers import feed_in_pieces, fixture, plain, split_plans, target

T = target("openai")


def _chunk(choices: list[ChunkChoice], usage: Usage | None = None, cid: str = "chatcmpl-123") -> ChatChunk:
    return ChatChunk(
        id=cid,
        model="gpt-4o-mini",
        created=1694268190,
        choices=choices,
        usage=usage,
        system_fingerprint="fp_44709d6fcb" if cid == "chatcmpl-123" else None,
    )


BASIC_USAGE = Usage(
    prompt_tokens=9,
    completion_tokens=4,
    total_tokens=13,
    prompt_tokens_details=PromptTokensDetails(),
    completion_tokens_details=CompletionTokensDetails(),
)
BASIC = [
    _chunk([ChunkChoice(index=0, delta=Delta(role="assistant", content=""))]),
    _chunk([ChunkChoice(index=0, delta=Delta(content="Hello"))]),
    _chunk([ChunkChoice(index=0, delta=Delta(content=" world, héllo ✓"))]),
    _chunk([ChunkChoice(index=0, delta=Delta(), finish_reason="stop")]),
    _chunk([], BASIC_USAGE),
]
TOOLS = [
    _chunk(
        [
            ChunkChoice(
                index=0,
                delta=Delta(
                    role="assistant",
                    tool_calls=[
                        ToolCallDelta(
                            index=0,
                            id="call_DdmO9pD3xa9XTPNJ32zg2hcA",
                            type="function",
                            function=FunctionCallDelta(name="get_current_weather", arguments=""),
                        )
                    ],
                ),
            )
        ],
        cid="chatcmpl-tc",
    ),
    _chunk(
        [
            ChunkChoice(
                index=0,
                delta=Delta(
                    tool_calls=[ToolCallDelta(index=0, function=FunctionCallDelta(arguments='{"location":'))]
                ),
            )
        ],
        cid="chatcmpl-tc",
    ),
    _chunk(
        [
            ChunkChoice(
                index=0,
                delta=Delta(
                    tool_calls=[
                        ToolCallDelta(index=0, function=FunctionCallDelta(arguments=' "Boston, MA"}'))
                    ]
                ),
            )
        ],
        cid="chatcmpl-tc",
    ),
    _chunk([ChunkChoice(index=0, delta=Delta(), finish_reason="tool_calls")], cid="chatcmpl-tc"),
    _chunk([], Usage(prompt_tokens=82, completion_tokens=17, total_tokens=99), cid="chatcmpl-tc"),
]

STREAM_CASES = [
    pytest.param("chat_stream_basic.sse", BASIC, id="text_stream->chunks"),
    pytest.param("chat_stream_tool_calls.sse", TOOLS, id="tool_call_stream->chunks"),
]


@pytest.mark.parametrize(("name", "expected"), STREAM_CASES)
@pytest.mark.parametrize("plan", ["whole", "bytewise", "primes", "random"])
def test_stream_decoder_is_cut_proof(name: str, expected: list[ChatChunk], plan: str) -> None:
    data = fixture("openai", name)
    decoder = CODEC.stream_decoder(T)
    assert plain(feed_in_pieces(decoder, data, split_plans(data)[plan])) == plain(expected)
    assert isinstance(decoder, OpenAIStreamDecoder) and decoder.done and decoder.error is None


@pytest.mark.parametrize(("name", "expected"), STREAM_CASES)
def test_stream_decoder_handles_crlf(name: str, expected: list[ChatChunk]) -> None:
    data = fixture("openai", name).replace(b"\n", b"\r\n")
    decoder = OpenAIStreamDecoder()
    assert plain(feed_in_pieces(decoder, data, [5])) == plain(expected)


FOLD_CASES = [
    pytest.param(
        "chat_stream_basic.sse",
        ChatResponse(
            id="chatcmpl-123",
            model="gpt-4o-mini",
            created=1694268190,
            choices=[
                Choice(index=0, message=ResponseMessage(content="Hello world, héllo ✓"), finish_reason="stop")
            ],
            usage=BASIC_USAGE,
        ),
        id="text_stream->unary",
    ),
    pytest.param(
        "chat_stream_tool_calls.sse",
        ChatResponse(
            id="chatcmpl-tc",
            model="gpt-4o-mini",
            created=1694268190,
            choices=[
                Choice(
                    index=0,
                    message=ResponseMessage(
                        tool_calls=[
                            ToolCall(
                                id="call_DdmO9pD3xa9XTPNJ32zg2hcA",
                                function=FunctionCall(
                                    name="get_current_weather", arguments='{"location": "Boston, MA"}'
                                ),
                            )
                        ]
                    ),
                    finish_reason="tool_calls",
                )
            ],
            usage=Usage(prompt_tokens=82, completion_tokens=17, total_tokens=99),
        ),
        id="tool_call_stream->unary",
    ),
]


@pytest.mark.parametrize(("name", "expected"), FOLD_CASES)
def test_stream_folds_into_the_unary_response(name: str, expected: ChatResponse) -> None:
    decoder = OpenAIStreamDecoder()
    chunks = decoder.feed(fixture("openai", name)) + decoder.close()
    assert fold(chunks) == expected


def test_comments_unknown_fields_and_events_are_tolerated() -> None:
    data = (
        b": keep-alive\n\n"
        b"retry: 3000\nid: 7\nfoo: bar\n"
        b'data: {"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"a","new":1}}],"x":2}\n\n'
        b'event: ping\ndata: {"type":"ping"}\n\n'
        b"data: [DONE]"  # no final blank line: still counted at close
    )
    decoder = OpenAIStreamDecoder()
    chunks = decoder.feed(data) + decoder.close()
    assert plain(chunks) == [{"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"content": "a"}}]}]
    assert decoder.done and decoder.error is None


def test_error_frame_mid_stream_is_raised_with_what_came_before() -> None:
    decoder = OpenAIStreamDecoder()
    decoder.feed(b'data: {"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"a"}}]}\n\n')
    with pytest.raises(StreamError) as exc:
        decoder.feed(
            b'data: {"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"b"}}]}\n\n'
            b'data: {"error":{"message":"overloaded","type":"server_error","code":null}}\n\n'
        )
    err = exc.value.error
    assert err.status == 502 and err.code == "upstream_error" and not decoder.done
    assert "overloaded" not in err.message  # the provider's text is not echoed
    # The chunk before the error frame, in the same read, is not lost.
    assert [c.choices[0].delta.content for c in exc.value.chunks] == ["b"]


def test_cut_off_stream_is_not_done() -> None:
    decoder = OpenAIStreamDecoder()
    chunks = decoder.feed(
        b'data: {"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"a"}}]}\n\ndata: {"id'
    )
    chunks += decoder.close()
    assert len(chunks) == 1 and not decoder.done


def test_openai_itself_must_end_its_stream_with_done() -> None:
    # OpenAI always ends with [DONE]: without it the stream was cut off,
    # even after a finish reason.  Compatible providers are not held to it.
    body = (
        b'data: {"id":"c","model":"m",'
        b'"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}]}\n\n'
    )
    strict = CODEC.stream_decoder(target("openai"))
    assert len(strict.feed(body)) == 1
    with pytest.raises(StreamError) as exc:
        strict.close()
    assert exc.value.error.code == "upstream_error"
    lenient = OpenAIStreamDecoder()
    lenient.feed(body)
    assert lenient.close() == []


def test_sse_parser_keeps_the_raw_bytes_of_each_event() -> None:
    p = SSEParser()
    first = p.feed(b"data: one\r\n\r\ndata: tw")
    assert first == [SSEEvent(b"one", "", b"data: one\r\n\r\n")]
    assert p.pending
    assert p.feed(b"o\ndata: lines\n\n") == [SSEEvent(b"two\nlines", "", b"data: two\ndata: lines\n\n")]
    assert not p.pending
