"""The OpenAI codec against wire fixtures in the API reference's shapes:
table-driven, readable ids, whole structures compared."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from adapters.base import CodecError
from adapters.canonical import (
    CanonicalError,
    ChatRequest,
    ChatResponse,
    Choice,
    CompletionTokensDetails,
    FunctionCall,
    FunctionDef,
    Message,
    PromptTokensDetails,
    ResponseMessage,
    StreamOptions,
    TextPart,
    Tool,
    ToolCall,
    Usage,
)
from adapters.openai import CODEC
from adapters.openai.codec import prepare_chat_body, to_event_usage
from streams import events
from tests.adapters.helpers import body, fixture, plain, target

T = target("openai", base_url="https://api.openai.com/v1", model="gpt-4o-mini")


# --- decode ----------------------------------------------------------------------

DECODE_CASES = [
    pytest.param(
        "chat_response_basic.json",
        ChatResponse(
            id="chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
            model="gpt-4o-2024-08-06",
            created=1741570283,
            choices=[
                Choice(
                    index=0,
                    message=ResponseMessage(
                        content="The image shows a wooden boardwalk path running through a lush green marsh."
                    ),
                    finish_reason="stop",
                )
            ],
            usage=Usage(
                prompt_tokens=1117,
                completion_tokens=46,
                total_tokens=1163,
                prompt_tokens_details=PromptTokensDetails(),
                completion_tokens_details=CompletionTokensDetails(),
            ),
            service_tier="default",
            system_fingerprint="fp_fc9f1d7035",
        ),
        id="text->canonical",
    ),
    pytest.param(
        "chat_response_tool_calls.json",
        ChatResponse(
            id="chatcmpl-abc123",
            model="gpt-4o-mini",
            created=1699896916,
            choices=[
                Choice(
                    index=0,
                    message=ResponseMessage(
                        tool_calls=[
                            ToolCall(
                                id="call_abc123",
                                function=FunctionCall(
                                    name="get_current_weather", arguments='{\n"location": "Boston, MA"\n}'
                                ),
                            )
                        ]
                    ),
                    finish_reason="tool_calls",
                )
            ],
            usage=Usage(
                prompt_tokens=82,
                completion_tokens=17,
                total_tokens=99,
                completion_tokens_details=CompletionTokensDetails(),
            ),
        ),
        id="tool_calls->canonical",
    ),
    pytest.param(
        "chat_response_reasoning_cached.json",
        ChatResponse(
            id="chatcmpl-AOxG0a9hbiY3zrT5pvs2Hhr8Lb5Cw",
            model="o1-mini-2024-09-12",
            created=1730715240,
            choices=[Choice(index=0, message=ResponseMessage(content="Paris."), finish_reason="stop")],
            usage=Usage(
                prompt_tokens=2006,
                completion_tokens=300,
                total_tokens=2306,
                prompt_tokens_details=PromptTokensDetails(cached_tokens=1920),
                completion_tokens_details=CompletionTokensDetails(reasoning_tokens=256),
            ),
            system_fingerprint="fp_f7a5f9e4f5",
        ),
        id="reasoning+cached->canonical",
    ),
    pytest.param(
        "chat_response_unknown_finish.json",
        ChatResponse(
            id="chatcmpl-xyz",
            model="some-compatible-model",
            created=1730715240,
            choices=[Choice(index=0, message=ResponseMessage(content="cut"), finish_reason="unknown")],
        ),
        id="unknown_finish_reason+unknown_field->tolerated",
    ),
]


@pytest.mark.parametrize(("name", "expected"), DECODE_CASES)
def test_decode_chat(name: str, expected: ChatResponse) -> None:
    # Structs compare field by field (to_builtins would hide defaults unevenly).
    assert CODEC.decode_chat(fixture("openai", name), T) == expected


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"<html>502 Bad Gateway</html>", id="html"),
        pytest.param(b'{"choices": "nope"}', id="wrong_shape"),
        pytest.param(b"", id="empty"),
    ],
)
def test_decode_chat_unreadable_is_a_502(raw: bytes) -> None:
    with pytest.raises(CodecError) as err:
        CODEC.decode_chat(raw, T)
    assert err.value.error.status == 502 and err.value.error.code == "upstream_error"


def test_decode_embeddings() -> None:
    resp = CODEC.decode_embeddings(fixture("openai", "embeddings_response.json"), T)
    assert plain(resp) == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.0023064255, -0.009327292, -0.0028842222]}
        ],
        "model": "text-embedding-ada-002",
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
    }


# --- usage -------------------------------------------------------------------------

USAGE_CASES = [
    pytest.param(
        "chat_response_basic.json",
        events.Usage(prompt_tokens=1117, completion_tokens=46, total_tokens=1163),
        id="plain",
    ),
    pytest.param(
        "chat_response_reasoning_cached.json",
        events.Usage(
            prompt_tokens=2006,
            completion_tokens=300,
            total_tokens=2306,
            cached_tokens=1920,
            reasoning_tokens=256,
        ),
        id="cached+reasoning",
    ),
    pytest.param("chat_response_unknown_finish.json", None, id="no_usage"),
]


@pytest.mark.parametrize(("name", "expected"), USAGE_CASES)
def test_usage_extraction(name: str, expected: events.Usage | None) -> None:
    assert to_event_usage(CODEC.decode_chat(fixture("openai", name), T).usage) == expected


# --- encode ------------------------------------------------------------------------

ENCODE_CASES = [
    pytest.param(
        ChatRequest(model="public-name", messages=[Message(role="user", content="hi")], temperature=0.2),
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.2},
        id="text->identity_with_provider_model",
    ),
    pytest.param(
        ChatRequest(model="m", messages=[Message(role="user", content="hi")], stream=True),
        {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        id="stream->include_usage_injected",
    ),
    pytest.param(
        ChatRequest(
            model="m",
            messages=[Message(role="user", content="hi")],
            stream=True,
            stream_options=StreamOptions(include_usage=False),
        ),
        {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        id="stream_include_usage_false->forced_true",
    ),
    pytest.param(
        ChatRequest(
            model="m",
            messages=[
                Message(role="user", content=[TextPart(text="weather?")]),
                Message(
                    role="assistant",
                    tool_calls=[ToolCall(id="call_1", function=FunctionCall(name="w", arguments="{}"))],
                ),
                Message(role="tool", tool_call_id="call_1", content="sunny"),
            ],
            tools=[Tool(function=FunctionDef(name="w", parameters={"type": "object"}))],
            tool_choice="auto",
            nexus_ext={"anthropic": {"thinking": {}}},
        ),
        {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": "{}"}}
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            ],
            "tools": [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}],
            "tool_choice": "auto",
        },
        id="tools->type_function_filled_and_nexus_ext_dropped",
    ),
]


@pytest.mark.parametrize(("request_", "expected"), ENCODE_CASES)
def test_encode_chat(request_: ChatRequest, expected: dict[str, Any]) -> None:
    wire = CODEC.encode_chat(request_, T)
    assert wire.url == "https://api.openai.com/v1/chat/completions"
    assert wire.headers["Authorization"] == "Bearer sk-test"
    assert body(wire.body) == expected


def test_passthrough_keeps_unknown_fields_and_rewrites_only_the_model() -> None:
    caller = {
        "model": "alias",
        "messages": [{"role": "user", "content": "x", "cache_control": {"type": "ephemeral"}}],
        "stream": True,
        "stream_options": {"include_obfuscation": False},
        "prediction": {"type": "content", "content": "..."},
    }
    out = msgspec.json.decode(prepare_chat_body(dict(caller), "gpt-4o-mini"))
    assert out == {
        **caller,
        "model": "gpt-4o-mini",
        "stream_options": {"include_obfuscation": False, "include_usage": True},
    }


def test_encode_embeddings() -> None:
    from adapters.canonical import EmbeddingRequest

    wire = CODEC.encode_embeddings(EmbeddingRequest(model="public", input=["a", "b"], dimensions=8), T)
    assert wire.url == "https://api.openai.com/v1/embeddings"
    assert body(wire.body) == {"model": "gpt-4o-mini", "input": ["a", "b"], "dimensions": 8}


# --- errors ------------------------------------------------------------------------

ERROR_CASES = [
    pytest.param(
        400,
        "error_invalid_param.json",
        {},
        CanonicalError(
            code="invalid_request",
            status=400,
            provider_status=400,
            message="the provider rejected the request as invalid "
            "(type invalid_request_error, code invalid_value, param temperature)",
        ),
        id="400->invalid_request",
    ),
    pytest.param(
        401,
        "error_invalid_api_key.json",
        {},
        CanonicalError(
            code="auth_failed",
            status=502,
            provider_status=401,
            message="the provider refused the gateway's credential (HTTP 401) "
            "(type invalid_request_error, code invalid_api_key)",
        ),
        id="401->auth_failed",
    ),
    pytest.param(
        403,
        "error_server.json",
        {},
        CanonicalError(
            code="auth_failed",
            status=502,
            provider_status=403,
            message="the provider refused the gateway's credential (HTTP 403) (type server_error)",
        ),
        id="403->auth_failed",
    ),
    pytest.param(
        429,
        "error_rate_limit.json",
        {"Retry-After": "20"},
        CanonicalError(
            code="rate_limited",
            status=429,
            provider_status=429,
            retryable=True,
            retry_after_s=20.0,
            message="the provider is rate limiting requests (type requests, code rate_limit_exceeded)",
        ),
        id="429->rate_limited_with_retry_after",
    ),
    pytest.param(
        429,
        "error_rate_limit.json",
        {"retry-after-ms": "120", "Retry-After": "1"},
        CanonicalError(
            code="rate_limited",
            status=429,
            provider_status=429,
            retryable=True,
            retry_after_s=0.12,
            message="the provider is rate limiting requests (type requests, code rate_limit_exceeded)",
        ),
        id="429->retry_after_ms_preferred",
    ),
    pytest.param(
        408,
        None,
        {},
        CanonicalError(
            code="timeout",
            status=504,
            provider_status=408,
            retryable=True,
            message="the provider timed out (HTTP 408)",
        ),
        id="408->timeout",
    ),
    pytest.param(
        504,
        None,
        {},
        CanonicalError(
            code="timeout",
            status=504,
            provider_status=504,
            retryable=True,
            message="the provider timed out (HTTP 504)",
        ),
        id="504->timeout",
    ),
    pytest.param(
        500,
        "error_server.json",
        {},
        CanonicalError(
            code="upstream_error",
            status=502,
            provider_status=500,
            retryable=True,
            message="the provider failed (HTTP 500) (type server_error)",
        ),
        id="500->upstream_error",
    ),
    pytest.param(
        503,
        None,
        {"Retry-After": "3"},
        CanonicalError(
            code="upstream_error",
            status=502,
            provider_status=503,
            retryable=True,
            retry_after_s=3.0,
            message="the provider failed (HTTP 503)",
        ),
        id="503_html_body->upstream_error",
    ),
]


@pytest.mark.parametrize(("status", "name", "headers", "expected"), ERROR_CASES)
def test_normalise_error(
    status: int, name: str | None, headers: dict[str, str], expected: CanonicalError
) -> None:
    raw = fixture("openai", name) if name else b"<html>bad gateway</html>"
    assert plain(CODEC.normalise_error(status, raw, headers)) == plain(expected)


def test_error_messages_never_carry_the_providers_text() -> None:
    # The provider's message can quote the prompt; only its identifiers pass.
    err = CODEC.normalise_error(400, fixture("openai", "error_invalid_param.json"), {})
    assert "secret" not in err.message and "temperature" in err.message
