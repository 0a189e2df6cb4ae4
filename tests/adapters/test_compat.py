"""The OpenAI-compatible table (9 providers) plus Azure, GLM and MiniMax:
URLs, auth, per-model quirks, usage dialects, errors."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.azure import AzureCodec
from adapters.base import Capability, CodecError
from adapters.canonical import (
    ChatRequest,
    EmbeddingRequest,
    FunctionDef,
    JSONSchemaSpec,
    Message,
    ResponseFormat,
    Tool,
    ToolChoiceFunction,
    ToolChoiceNamed,
)
from adapters.compat import PROVIDERS, CompatCodec
from adapters.glm import GLMCodec
from adapters.minimax import MiniMaxCodec
from adapters.wirekit.fold import fold
from tests.adapters.helpers import body, feed_in_pieces, fixture, plain, split_plans, target

HI = [Message(role="user", content="hi")]
TOOL = Tool(function=FunctionDef(name="f", parameters={"type": "object", "properties": {}}))


def req(**kw: Any) -> ChatRequest:
    return ChatRequest(model="x", messages=HI, **kw)


def codec(name: str) -> CompatCodec:
    return CompatCodec(PROVIDERS[name])


def test_the_table_holds_the_nine_providers() -> None:
    assert sorted(PROVIDERS) == sorted(
        [
            "deepseek",
            "moonshot",
            "mistral",
            "groq",
            "fireworks",
            "together",
            "perplexity",
            "xai",
            "huggingface",
        ]
    )


@pytest.mark.parametrize(
    ("name", "url"),
    [
        pytest.param("deepseek", "https://api.deepseek.com/v1/chat/completions", id="deepseek"),
        pytest.param("moonshot", "https://api.moonshot.ai/v1/chat/completions", id="moonshot"),
        pytest.param("mistral", "https://api.mistral.ai/v1/chat/completions", id="mistral"),
        pytest.param("groq", "https://api.groq.com/openai/v1/chat/completions", id="groq"),
        pytest.param("fireworks", "https://api.fireworks.ai/inference/v1/chat/completions", id="fireworks"),
        pytest.param("together", "https://api.together.xyz/v1/chat/completions", id="together"),
        pytest.param("perplexity", "https://api.perplexity.ai/chat/completions", id="perplexity"),
        pytest.param("xai", "https://api.x.ai/v1/chat/completions", id="xai"),
        pytest.param("huggingface", "https://router.huggingface.co/v1/chat/completions", id="huggingface"),
    ],
)
def test_default_urls_and_bearer_auth(name: str, url: str) -> None:
    wire = codec(name).encode_chat(req(max_completion_tokens=9), target(name, "", "some-model"))
    assert wire.url == url
    assert wire.headers["Authorization"] == "Bearer sk-test"
    assert body(wire.body) == {
        "model": "some-model",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 9,
    }


def test_configured_base_url_wins() -> None:
    wire = codec("groq").encode_chat(req(), target("groq", "http://127.0.0.1:9999/v1", "llama"))
    assert wire.url == "http://127.0.0.1:9999/v1/chat/completions"


QUIRKS = [
    pytest.param(
        "moonshot",
        "kimi-k2.5-preview",
        req(temperature=0.3),
        {"model": "kimi-k2.5-preview", "messages": [{"role": "user", "content": "hi"}], "temperature": 1.0},
        id="moonshot_kimi_k2.5_forces_temperature_1",
    ),
    pytest.param(
        "moonshot",
        "kimi-k2-0905-preview",
        req(temperature=0.3),
        {
            "model": "kimi-k2-0905-preview",
            "messages": [{"role": "user", "content": "hi"}],
            "temperature": 0.3,
        },
        id="moonshot_other_models_keep_temperature",
    ),
    pytest.param(
        "deepseek",
        "deepseek-reasoner",
        req(tools=[TOOL], tool_choice="required"),
        {
            "model": "deepseek-reasoner",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "f", "parameters": {"type": "object", "properties": {}}},
                }
            ],
        },
        id="deepseek_reasoner_strips_forced_tool_choice",
    ),
    pytest.param(
        "deepseek",
        "deepseek-chat",
        req(tools=[TOOL], tool_choice=ToolChoiceNamed(function=ToolChoiceFunction(name="f"))),
        {
            "model": "deepseek-chat",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "f", "parameters": {"type": "object", "properties": {}}},
                }
            ],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
        },
        id="deepseek_chat_keeps_forced_tool_choice",
    ),
    pytest.param(
        "mistral",
        "mistral-large-latest",
        req(stream=True),
        {"model": "mistral-large-latest", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        id="mistral_stream_has_no_stream_options",
    ),
    pytest.param(
        "groq",
        "llama-3.3-70b",
        req(stream=True),
        {
            "model": "llama-3.3-70b",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        id="groq_stream_asks_for_usage",
    ),
]


@pytest.mark.parametrize(("name", "model", "request_", "expected"), QUIRKS)
def test_quirks(name: str, model: str, request_: ChatRequest, expected: dict[str, Any]) -> None:
    assert body(codec(name).encode_chat(request_, target(name, "", model)).body) == expected


def test_capabilities_are_enforced_before_sending() -> None:
    with pytest.raises(CodecError) as exc:
        codec("perplexity").encode_chat(req(tools=[TOOL]), target("perplexity", "", "sonar"))
    assert exc.value.error.status == 400 and "tools" in exc.value.error.message
    with pytest.raises(CodecError):
        codec("deepseek").encode_chat(
            req(
                response_format=ResponseFormat(
                    type="json_schema", json_schema=JSONSchemaSpec(name="x", schema={})
                )
            ),
            target("deepseek", "", "deepseek-chat"),
        )
    with pytest.raises(CodecError) as exc:
        codec("groq").encode_embeddings(EmbeddingRequest(model="e", input="x"), target("groq", "", "e"))
    assert exc.value.error.code == "endpoint_unsupported"


def test_deepseek_cache_hits_become_cached_tokens() -> None:
    resp = codec("deepseek").decode_chat(fixture("deepseek", "response_reasoner.json"), target("deepseek"))
    assert plain(resp.usage) == {
        "prompt_tokens": 1300,
        "completion_tokens": 80,
        "total_tokens": 1380,
        "prompt_tokens_details": {"cached_tokens": 1280},
        "completion_tokens_details": {"reasoning_tokens": 60},
    }
    assert resp.choices[0].message.reasoning_content == "Compare 9.11 and 9.8: 0.11 < 0.80."


STREAM = fixture("deepseek", "stream.sse")


@pytest.mark.parametrize("plan", list(split_plans(STREAM)))
def test_deepseek_stream_cache_hits(plan: str) -> None:
    chunks = feed_in_pieces(
        codec("deepseek").stream_decoder(target("deepseek")), STREAM, split_plans(STREAM)[plan]
    )
    folded = fold(chunks)
    assert folded.choices[0].message.content == "Hello!"
    assert plain(folded.usage) == {
        "prompt_tokens": 70,
        "completion_tokens": 2,
        "total_tokens": 72,
        "prompt_tokens_details": {"cached_tokens": 64},
    }


def test_moonshot_cached_tokens() -> None:
    resp = codec("moonshot").decode_chat(fixture("moonshot", "response_cached.json"), target("moonshot"))
    assert resp.usage is not None and resp.usage.cached_tokens == 16


def test_compat_errors_are_prefixed_with_the_provider() -> None:
    err = codec("groq").normalise_error(
        429, b'{"error":{"message":"slow","type":"tokens"}}', {"retry-after": "2"}
    )
    assert (err.code, err.retryable, err.retry_after_s) == ("rate_limited", True, 2.0)
    assert err.message.startswith("groq: ")


# --- Azure -------------------------------------------------------------------------

AZ = target("azure", "https://my-res.openai.azure.com", "gpt-4o-prod", api_version="2024-10-21")


def test_azure_chat_url_and_api_key_header() -> None:
    wire = AzureCodec().encode_chat(req(), AZ)
    assert (
        wire.url
        == "https://my-res.openai.azure.com/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"
    )
    assert dict(wire.headers) == {"content-type": "application/json", "api-key": "sk-test"}
    assert body(wire.body)["messages"] == [{"role": "user", "content": "hi"}]


def test_azure_embeddings_and_entra_bearer() -> None:
    t = target("azure", "https://my-res.openai.azure.com/openai/", "embed-dep", auth="bearer")
    wire = AzureCodec().encode_embeddings(EmbeddingRequest(model="e", input=["a"]), t)
    assert (
        wire.url
        == "https://my-res.openai.azure.com/openai/deployments/embed-dep/embeddings?api-version=2024-10-21"
    )
    assert wire.headers["authorization"] == "Bearer sk-test" and "api-key" not in wire.headers


def test_azure_decodes_responses_with_filter_annotations() -> None:
    resp = AzureCodec().decode_chat(fixture("azure", "response.json"), AZ)
    assert resp.choices[0].message.content == "Yes, Azure OpenAI supports customer managed keys."
    assert plain(resp.usage) == {"prompt_tokens": 33, "completion_tokens": 557, "total_tokens": 590}


def test_azure_needs_a_base_url() -> None:
    with pytest.raises(CodecError) as exc:
        AzureCodec().encode_chat(req(), target("azure", "", "dep"))
    assert "base_url" in exc.value.error.message


# --- GLM, MiniMax ----------------------------------------------------------------------


def test_glm_url_thinking_ext_and_reasoning() -> None:
    wire = GLMCodec().encode_chat(
        req(nexus_ext={"glm": {"thinking": {"type": "enabled"}, "ignored": 1}}), target("glm", "", "glm-4.5")
    )
    assert wire.url == "https://open.bigmodel.cn/api/paas/v4/chat/completions"
    assert body(wire.body) == {
        "model": "glm-4.5",
        "messages": [{"role": "user", "content": "hi"}],
        "thinking": {"type": "enabled"},
    }
    resp = GLMCodec().decode_chat(fixture("glm", "response_thinking.json"), target("glm"))
    assert (resp.choices[0].message.reasoning_content, resp.usage.cached_tokens if resp.usage else None) == (
        "The user wants the answer.",
        4,
    )


def test_glm_refuses_token_array_embeddings() -> None:
    t = target("glm", "", "embedding-3")
    assert (
        GLMCodec()
        .encode_embeddings(EmbeddingRequest(model="e", input=["a"]), t)
        .url.endswith("/api/paas/v4/embeddings")
    )
    with pytest.raises(CodecError) as exc:
        GLMCodec().encode_embeddings(EmbeddingRequest(model="e", input=[1, 2, 3]), t)
    assert "token-array" in exc.value.error.message


def test_minimax_group_id_and_200_errors() -> None:
    m = MiniMaxCodec()
    wire = m.encode_chat(req(), target("minimax", "", "MiniMax-Text-01", group_id="g-1"))
    assert wire.url == "https://api.minimax.io/v1/chat/completions?GroupId=g-1"
    ok = m.decode_chat(fixture("minimax", "response_ok.json"), target("minimax"))
    assert ok.choices[0].message.content == "Hello! How can I help?"
    with pytest.raises(CodecError) as exc:
        m.decode_chat(fixture("minimax", "error_auth_200.json"), target("minimax"))
    assert (exc.value.error.code, exc.value.error.status) == ("auth_failed", 502)
    assert "Authorization" not in exc.value.error.message  # the provider's text is not echoed


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_every_row_claims_only_chat_capabilities_it_can_encode(name: str) -> None:
    caps = PROVIDERS[name].capabilities
    assert {Capability.TEXT, Capability.STREAM} <= caps
    assert Capability.RESPONSES not in caps


THOUGHTFUL = [
    Message(role="user", content="hi"),
    Message(role="assistant", content="hello", reasoning_content="greet back"),
    Message(role="user", content="and?"),
]


@pytest.mark.parametrize(
    ("name", "kept"),
    [
        pytest.param("mistral", False, id="mistral_drops_input_reasoning"),
        pytest.param("groq", False, id="groq_drops_input_reasoning"),
        pytest.param("deepseek", True, id="deepseek_keeps_input_reasoning"),
        pytest.param("moonshot", True, id="moonshot_keeps_input_reasoning"),
    ],
)
def test_reasoning_content_on_input_messages(name: str, kept: bool) -> None:
    wire = codec(name).encode_chat(ChatRequest(model="x", messages=THOUGHTFUL), target(name, "", "m"))
    assert ("reasoning_content" in body(wire.body)["messages"][1]) is kept


def test_azure_drops_input_reasoning() -> None:
    wire = AzureCodec().encode_chat(ChatRequest(model="x", messages=THOUGHTFUL), AZ)
    assert "reasoning_content" not in body(wire.body)["messages"][1]


@pytest.mark.parametrize(
    ("deployment", "options", "expected"),
    [
        pytest.param("o3-mini-prod", {}, {"max_completion_tokens": 100}, id="o_series_by_name"),
        pytest.param("chat-prod", {"reasoning": True}, {"max_completion_tokens": 100}, id="flagged"),
        pytest.param("gpt-4o-prod", {}, {"max_tokens": 100, "temperature": 0.3}, id="plain_model_untouched"),
    ],
)
def test_azure_reasoning_deployments(
    deployment: str, options: dict[str, Any], expected: dict[str, Any]
) -> None:
    t = target("azure", "https://r.openai.azure.com", deployment, **options)
    wire = body(AzureCodec().encode_chat(req(max_tokens=100, temperature=0.3), t).body)
    assert {
        k: wire[k] for k in ("max_tokens", "max_completion_tokens", "temperature") if k in wire
    } == expected


def test_mid_stream_error_frames_raise_stream_error_like_every_codec() -> None:
    from adapters.base import StreamError

    data = (
        b'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
        b'"delta":{"content":"partial"},"finish_reason":null}]}\n\n'
        b'data: {"error":{"message":"upstream overloaded","type":"server_error"}}\n\n'
    )
    for c in (codec("deepseek"), codec("groq"), AzureCodec()):
        dec = c.stream_decoder(target(c.name))
        with pytest.raises(StreamError) as exc:
            dec.feed(data)
        assert exc.value.error.code == "upstream_error" and exc.value.error.message.startswith(f"{c.name}: ")
        assert [ch.choices[0].delta.content for ch in exc.value.chunks] == ["partial"]


def test_invalid_utf8_is_an_upstream_error_not_a_crash() -> None:
    bad = b'{"id":"\xff","object":"chat.completion","choices":[]}'
    for c in (codec("groq"), AzureCodec(), GLMCodec(), MiniMaxCodec()):
        with pytest.raises(CodecError) as exc:
            c.decode_chat(bad, target(c.name))
        assert exc.value.error.code == "upstream_error"
        with pytest.raises(CodecError):
            c.stream_decoder(target(c.name)).feed(b'data: {"id":"\xff","choices":[]}\n\n')
