# ruff: noqa: E501  (golden wire data reads better unwrapped)
"""Per-provider-family wire samples the conformance suite decodes: each
family's documented fixtures (tests/fixtures/<provider>/) plus, for the
OpenAI family, the OpenAI chat-completions shapes inline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from adapters.base import Target
from adapters.bedrock.eventstream import encode_message
from adapters.compat import PROVIDERS
from tests.adapters.helpers import fixture


@dataclass(frozen=True)
class Samples:
    text: bytes | None = None
    tool: tuple[bytes, str] | None = None  # (response, tool name in it)
    stream_text: bytes | None = None
    stream_tool: tuple[bytes, str] | None = None
    reasoning: bytes | None = None
    embeddings: bytes | None = None


def _sse(*objs: Any) -> bytes:
    return b"".join(b"data: " + msgspec.json.encode(o) + b"\n\n" for o in objs) + b"data: [DONE]\n\n"


def _chunk(
    delta: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        out = {**out, "choices": [], "usage": usage}
    return out


OPENAI = Samples(
    text=msgspec.json.encode(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
        }
    ),
    tool=(
        msgspec.json.encode(
            {
                "id": "chatcmpl-2",
                "object": "chat.completion",
                "created": 1,
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "tool_calls",
                        "message": {
                            "role": "assistant",
                            "content": None,
                            "tool_calls": [
                                {
                                    "id": "call_1",
                                    "type": "function",
                                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                                }
                            ],
                        },
                    }
                ],
                "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16},
            }
        ),
        "get_weather",
    ),
    stream_text=_sse(
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "Hel"}),
        _chunk({"content": "lo"}),
        _chunk({}, "stop"),
        _chunk({}, usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}),
    ),
    stream_tool=(
        _sse(
            _chunk(
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": ""},
                        }
                    ],
                }
            ),
            _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
            _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
            _chunk({}, "tool_calls"),
        ),
        "get_weather",
    ),
    reasoning=fixture("deepseek", "response_reasoner.json"),
    embeddings=msgspec.json.encode(
        {
            "object": "list",
            "model": "e",
            "usage": {"prompt_tokens": 2, "total_tokens": 2},
            "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
        }
    ),
)

GEMINI_STREAM_TOOL = (
    b'data: {"candidates":[{"content":{"parts":[{"functionCall":{"name":"schedule_meeting","args":{"topic":"x"}}}]},'
    b'"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":3,"totalTokenCount":8}}\n\n'
)

GEMINI = Samples(
    text=fixture("gemini", "response_text.json"),
    tool=(fixture("gemini", "response_function_call.json"), "schedule_meeting"),
    stream_text=fixture("gemini", "stream_text.sse"),
    stream_tool=(GEMINI_STREAM_TOOL, "schedule_meeting"),
    reasoning=fixture("gemini", "response_thinking.json"),
    embeddings=fixture("gemini", "embed_batch.json"),
)

BEDROCK_STREAM = b"".join(
    encode_message(
        {":event-type": name, ":content-type": "application/json", ":message-type": "event"},
        msgspec.json.encode(payload),
    )
    for name, payload in msgspec.json.decode(fixture("bedrock", "stream_tool_events.json"))
)

FAMILY: dict[str, Samples] = {
    "openai": OPENAI,
    "anthropic": Samples(
        text=fixture("anthropic", "response_text.json"),
        tool=(fixture("anthropic", "response_tool_use.json"), "get_weather"),
        stream_text=fixture("anthropic", "stream_thinking.sse"),
        stream_tool=(fixture("anthropic", "stream_tool_use.sse"), "get_weather"),
        reasoning=fixture("anthropic", "response_thinking.json"),
    ),
    "gemini": GEMINI,
    "vertex": Samples(**{**GEMINI.__dict__, "embeddings": fixture("vertex", "predict_embeddings.json")}),
    "bedrock": Samples(
        text=fixture("bedrock", "converse_text.json"),
        tool=(fixture("bedrock", "converse_tool_use.json"), "top_song"),
        stream_text=BEDROCK_STREAM,
        stream_tool=(BEDROCK_STREAM, "top_song"),
        reasoning=fixture("bedrock", "converse_reasoning_cache.json"),
        embeddings=fixture("bedrock", "cohere_embed.json"),
    ),
    "cohere": Samples(
        text=fixture("cohere", "response_text.json"),
        tool=(fixture("cohere", "response_tool_call.json"), "get_weather"),
        stream_text=fixture("cohere", "stream_text.sse"),
        stream_tool=(fixture("cohere", "stream_tool.sse"), "get_weather"),
        reasoning=fixture("cohere", "response_tool_call.json"),
        embeddings=fixture("cohere", "embed.json"),
    ),
    "replicate": Samples(
        text=fixture("replicate", "prediction_llm.json"),
        stream_text=fixture("replicate", "stream.sse"),
    ),
    "voyage": Samples(embeddings=fixture("voyage", "embeddings.json")),
}

OPENAI_FAMILY = {"openai", "azure", "minimax", "glm", *PROVIDERS}


def samples(provider: str) -> Samples:
    return FAMILY["openai" if provider in OPENAI_FAMILY else provider]


def conformance_target(provider: str, embeddings: bool = False) -> Target:
    base = {"azure": "https://res.openai.azure.com", "openai": "https://api.openai.com/v1"}.get(provider, "")
    options: dict[str, Any] = {"vertex": {"project": "p"}, "bedrock": {"region": "us-east-1"}}.get(
        provider, {}
    )
    # Bedrock picks the embeddings body by model family.
    model = "cohere.embed-english-v3" if embeddings and provider == "bedrock" else "model-x"
    return Target(provider=provider, base_url=base, provider_model=model, api_key="sk-test", options=options)
