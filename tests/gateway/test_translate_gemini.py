"""The Gemini direction: generateContent requests (camelCase or snake_case)
-> canonical, canonical responses and chunk streams -> GenerateContentResponse
JSON and SSE chunks (read back by the official google-genai SDK's types
and by our own Gemini provider decoder), Google's error envelope, and the
URL that names the model and the streaming."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from google.genai import types as gtypes

from adapters.base import CodecError
from adapters.canonical import (
    ChatChunk,
    ChatResponse,
    Choice,
    ChunkChoice,
    CompletionTokensDetails,
    Delta,
    FunctionCall,
    FunctionCallDelta,
    ResponseMessage,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from adapters.gemini.stream import GeminiStreamDecoder
from adapters.wirekit.fold import fold
from adapters.wirekit.sse import SSEParser
from ingress.translate import gemini_generate as gemini
from ingress.translate.grammar import Failure
from ingress.translate.native_text import gemini_text
from tests.adapters.helpers import plain

REQUEST: dict[str, Any] = {
    "systemInstruction": {"parts": [{"text": "You are a weather bot."}]},
    "contents": [
        {
            "role": "user",
            "parts": [
                {"text": "What is this and the weather in SF?"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0K"}},
            ],
        },
        {
            "role": "model",
            "parts": [
                {"text": "Checking.", "thought": True},
                {"functionCall": {"name": "get_weather", "args": {"city": "SF"}}, "thoughtSignature": "c2ln"},
            ],
        },
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": "15C"}}}],
        },
    ],
    "tools": [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Get the weather",
                    "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}},
                }
            ]
        }
    ],
    "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
    "generationConfig": {
        "maxOutputTokens": 256,
        "temperature": 0.2,
        "topP": 0.9,
        "topK": 40,
        "stopSequences": ["###"],
        "responseMimeType": "application/json",
        "responseSchema": {"type": "OBJECT", "properties": {"answer": {"type": "STRING"}}},
        "thinkingConfig": {"thinkingBudget": 512},
    },
    "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
}


def _snake(value: Any) -> Any:
    """The same body in the REST examples' snake_case (API fields only)."""
    keep = {"args", "response", "parameters", "responseSchema"}
    if isinstance(value, list):
        return [_snake(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for k, v in value.items():
        name = "".join("_" + c.lower() if c.isupper() else c for c in k)
        out[name] = v if k in keep else _snake(v)
    return out


def test_decode_request_golden() -> None:
    got = gemini.decode_request(msgspec.json.encode(REQUEST))
    assert plain(got) == {
        "model": "",
        "max_tokens": 256,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["###"],
        "tool_choice": {"function": {"name": "get_weather"}},
        "tools": [
            {
                "function": {
                    "name": "get_weather",
                    "description": "Get the weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "response",
                "schema": {"type": "object", "properties": {"answer": {"type": "string"}}},
            },
        },
        "nexus_ext": {
            "gemini": {
                "thinking_config": {"thinkingBudget": 512},
                "top_k": 40,
                "safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
            }
        },
        "messages": [
            {"role": "system", "content": "You are a weather bot."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this and the weather in SF?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
                ],
            },
            {
                "role": "assistant",
                "reasoning_content": "Checking.",
                "tool_calls": [
                    {
                        "id": got.messages[2].tool_calls[0].id,  # type: ignore[index]
                        "function": {"name": "get_weather", "arguments": '{"city":"SF"}'},
                    }
                ],
            },
            {
                "role": "tool",
                "tool_call_id": got.messages[2].tool_calls[0].id,  # type: ignore[index]
                "content": '{"temp":"15C"}',
            },
        ],
    }


def test_snake_case_bodies_decode_the_same() -> None:
    snake = _snake(REQUEST)
    assert "system_instruction" in snake and "inline_data" in snake["contents"][0]["parts"][1]
    assert gemini.decode_request(msgspec.json.encode(snake)) == gemini.decode_request(
        msgspec.json.encode(REQUEST)
    )


def test_count_tokens_reads_contents_or_a_whole_request() -> None:
    bare = gemini.decode_count_tokens(msgspec.json.encode({"contents": REQUEST["contents"]}))
    whole = gemini.decode_count_tokens(
        msgspec.json.encode({"generateContentRequest": {"model": "models/x", **REQUEST}})
    )
    assert len(bare.messages) == 3 and len(whole.messages) == 4
    with pytest.raises(CodecError, match="contents or generateContentRequest"):
        gemini.decode_count_tokens(b"{}")


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({}, "contents"),
        ({"contents": "hi"}, "contents"),
        ({"contents": [{"parts": [{"text": 5}]}]}, "contents[0].parts[0].text"),
        ({"contents": [{"parts": [{"executableCode": {"code": "1"}}]}]}, "contents[0].parts[0]"),
        ({"contents": [{"role": "system", "parts": [{"text": "x"}]}]}, "contents[0].role"),
        ({"contents": [{"parts": [{"text": "x"}]}], "tools": [{"googleSearch": {}}]}, "tools[0]"),
        (
            {
                "contents": [{"parts": [{"text": "x"}]}],
                "generationConfig": {"responseMimeType": "text/x.enum"},
            },
            "responseMimeType",
        ),
        (
            {
                "contents": [
                    {"parts": [{"fileData": {"fileUri": "gs://b/a.pdf", "mimeType": "application/pdf"}}]}
                ]
            },
            "fileData",
        ),
        (
            {"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"maxOutputTokens": "many"}},
            "maxOutputTokens",
        ),
    ],
)
def test_bad_bodies_are_400s_naming_the_field(body: dict[str, Any], needle: str) -> None:
    with pytest.raises(CodecError) as info:
        gemini.decode_request(msgspec.json.encode(body))
    assert info.value.error.status == 400 and needle in info.value.error.message


def test_not_json_and_not_an_object_are_400s() -> None:
    for raw in (b"{", b"[1]", b"\xff"):
        with pytest.raises(CodecError) as info:
            gemini.decode_request(raw)
        assert info.value.error.status == 400


def test_the_url_names_the_model_and_the_stream() -> None:
    assert gemini.address("/v1beta/models/gemini-2.5-flash:generateContent", "") == (
        "gemini-2.5-flash",
        False,
    )
    assert gemini.address("/v1/models/m:streamGenerateContent", "alt=sse&key=k") == ("m", True)
    assert gemini.address("/v1beta/models/m:countTokens", "") == ("m", False)
    with pytest.raises(CodecError, match="alt=sse"):
        gemini.address("/v1beta/models/m:streamGenerateContent", "")
    assert gemini.parse_path("/v1beta/models/m:embedContent") == ("m", "embedContent")
    assert gemini.address("/v1/models/m:batchEmbedContents", "") == ("m", False)
    assert gemini.parse_path("/v1beta/models/m:predict") is None
    assert gemini.parse_path("/v1beta/models/:generateContent") is None
    assert gemini.parse_path("/v1beta/tunedModels/m:generateContent") is None
    assert gemini.query_key("alt=sse&key=nvk%5Fabc") == "nvk_abc"
    assert gemini.query_key("alt=sse") is None


def test_every_text_is_visible_to_the_hooks_and_media_is_not() -> None:
    body = msgspec.json.decode(msgspec.json.encode({"countTokens": 1, **REQUEST}))
    text = gemini_text(body)
    assert text.segments == [
        "You are a weather bot.",
        "What is this and the weather in SF?",
        "Checking.",
        "SF",
        "15C",
    ]
    assert text.messages == 3
    # A redaction is written back where the text was read (snake_case too).
    snake = _snake(REQUEST)
    view = gemini_text(snake)
    assert view.write([s.replace("SF", "[CITY]") for s in view.segments])
    assert snake["contents"][1]["parts"][1]["function_call"]["args"] == {"city": "[CITY]"}
    assert snake["system_instruction"]["parts"][0]["text"] == "You are a weather bot."
    # countTokens with a whole request inside
    nested = gemini_text({"generateContentRequest": {"contents": [{"parts": [{"text": "4111"}]}]}})
    assert nested.segments == ["4111"]


RESPONSE = ChatResponse(
    id="r-1",
    model="provider-model-v1",
    choices=[
        Choice(
            index=0,
            message=ResponseMessage(
                content="It is sunny.",
                reasoning_content="Look it up.",
                tool_calls=[
                    ToolCall(
                        id="call_1", function=FunctionCall(name="get_weather", arguments='{"city":"SF"}')
                    )
                ],
            ),
            finish_reason="tool_calls",
        )
    ],
    usage=Usage(
        prompt_tokens=50,
        completion_tokens=30,
        total_tokens=80,
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=10),
    ),
)


def test_encode_response_golden_and_the_sdk_reads_it() -> None:
    body = gemini.encode_response(RESPONSE, "gemini-2.5-flash")
    assert msgspec.json.decode(body) == {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "Look it up.", "thought": True},
                        {"text": "It is sunny."},
                        {"functionCall": {"name": "get_weather", "args": {"city": "SF"}, "id": "call_1"}},
                    ],
                },
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 50,
            "candidatesTokenCount": 20,
            "totalTokenCount": 80,
            "thoughtsTokenCount": 10,
        },
        "modelVersion": "gemini-2.5-flash",
        "responseId": "r-1",
    }
    sdk = gtypes.GenerateContentResponse.model_validate_json(body)
    assert sdk.text == "It is sunny."
    assert sdk.function_calls is not None and sdk.function_calls[0].args == {"city": "SF"}
    assert sdk.model_version == "gemini-2.5-flash"
    assert sdk.usage_metadata is not None and sdk.usage_metadata.total_token_count == 80


def _chunk(delta: Delta, finish: str | None = None, usage: Usage | None = None) -> ChatChunk:
    return ChatChunk(
        id="c-1",
        model="provider-model",
        choices=[ChunkChoice(index=0, delta=delta, finish_reason=finish)],
        usage=usage,
    )


CHUNKS = [
    _chunk(Delta(role="assistant", content="")),
    _chunk(Delta(content="Hello ")),
    _chunk(Delta(content="world")),
    _chunk(
        Delta(
            tool_calls=[
                ToolCallDelta(
                    index=0, id="call_9", function=FunctionCallDelta(name="lookup", arguments='{"q":')
                )
            ]
        )
    ),
    _chunk(Delta(tool_calls=[ToolCallDelta(index=0, function=FunctionCallDelta(arguments='"x"}'))])),
    _chunk(Delta(), finish="tool_calls"),
    ChatChunk(
        id="c-1",
        model="provider-model",
        choices=[],
        usage=Usage(prompt_tokens=7, completion_tokens=5, total_tokens=12),
    ),
]


def _stream(chunks: list[ChatChunk]) -> bytes:
    enc = gemini.GEMINI_GENERATE.stream_encoder("gemini-2.5-flash", False)
    return b"".join(enc.feed(c) for c in chunks) + enc.finish() + enc.finish()


def test_stream_frames_are_generate_content_chunks_with_usage_last() -> None:
    frames = [msgspec.json.decode(ev.data) for ev in SSEParser().feed(_stream(CHUNKS))]
    texts = [f["candidates"][0]["content"].get("parts") for f in frames]
    assert texts == [
        [{"text": "Hello "}],
        [{"text": "world"}],
        [{"functionCall": {"name": "lookup", "args": {"q": "x"}, "id": "call_9"}}],
    ]
    assert all(f["modelVersion"] == "gemini-2.5-flash" for f in frames)
    assert "usageMetadata" not in frames[0] and "finishReason" not in frames[0]["candidates"][0]
    assert frames[-1]["candidates"][0]["finishReason"] == "STOP"
    assert frames[-1]["usageMetadata"] == {
        "promptTokenCount": 7,
        "candidatesTokenCount": 5,
        "totalTokenCount": 12,
    }
    for ev in SSEParser().feed(_stream(CHUNKS)):
        gtypes.GenerateContentResponse.model_validate_json(ev.data)  # every frame is one the SDK reads


def test_stream_round_trip_through_our_gemini_decoder() -> None:
    dec = GeminiStreamDecoder("m")
    folded = fold(dec.feed(_stream(CHUNKS)) + dec.close())
    msg = folded.choices[0].message
    assert msg.content == "Hello world"
    assert msg.tool_calls is not None and msg.tool_calls[0].function.name == "lookup"
    assert folded.choices[0].finish_reason == "tool_calls"
    assert folded.usage is not None and folded.usage.total_tokens == 12


def test_an_empty_stream_still_ends_with_a_finish_and_usage() -> None:
    frames = [msgspec.json.decode(ev.data) for ev in SSEParser().feed(_stream([]))]
    assert len(frames) == 1 and frames[0]["candidates"][0]["finishReason"] == "STOP"
    assert frames[0]["usageMetadata"] == {}  # no usage known: every count 0 (omitted, as Google does)


@pytest.mark.parametrize(
    ("status", "google"),
    [
        (400, "INVALID_ARGUMENT"),
        (401, "UNAUTHENTICATED"),
        (403, "PERMISSION_DENIED"),
        (404, "NOT_FOUND"),
        (429, "RESOURCE_EXHAUSTED"),
        (451, "PERMISSION_DENIED"),
        (502, "UNAVAILABLE"),
        (504, "DEADLINE_EXCEEDED"),
    ],
)
def test_errors_in_googles_envelope(status: int, google: str) -> None:
    failure = Failure(status, "x_error", "x", "Something went wrong.")
    body = msgspec.json.decode(gemini.error_body(failure))
    assert body == {"error": {"code": status, "message": "Something went wrong.", "status": google}}
    frame = gemini.GEMINI_GENERATE.stream_encoder("m", False).error(failure)
    assert frame.startswith(b"data: {") and frame.endswith(b"\n\n")
