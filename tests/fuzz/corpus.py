"""What the fuzz suite starts from: every /v1 endpoint, the grammar its
errors must be in, and valid requests of each (several shapes apiece, so
that every field of each grammar is there to be broken).  ``CANARY`` marks
the caller's text: prompts, instructions, tool results and header values;
it must never come back in an error."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

# Per run: a run's canary can never be found by chance in a response.
CANARY = "qz" + secrets.token_hex(6) + "kanary"

PNG = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    path: str
    anthropic: bool  # errors in Anthropic's grammar (else OpenAI's)
    templates: tuple[dict[str, Any], ...] = ()  # valid bodies (POST endpoints)
    extra_headers: dict[str, str] = field(default_factory=dict)


def _chat() -> tuple[dict[str, Any], ...]:
    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": f"look it up {CANARY}",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
            "strict": False,
        },
    }
    return (
        {
            "model": "sim-small",
            "messages": [
                {"role": "system", "content": f"You are terse. {CANARY}"},
                {"role": "user", "content": f"Say hello {CANARY}", "name": "alice"},
            ],
            "max_tokens": 16,
            "max_completion_tokens": 16,
            "temperature": 0.5,
            "top_p": 0.9,
            "n": 1,
            "stop": ["\n\n"],
            "presence_penalty": 0.1,
            "frequency_penalty": 0.1,
            "seed": 7,
            "user": "fuzz-user",
            "stream": False,
            "logprobs": False,
            "top_logprobs": 0,
            "metadata": {"purpose": "fuzz"},
            "response_format": {"type": "text"},
            "tool_choice": "auto",
            "parallel_tool_calls": True,
            "reasoning_effort": "low",
            "tools": [tool],
        },
        {
            "model": "sim-small",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": f"What is in the picture? {CANARY}"},
                        {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}},
                    ],
                }
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
            },
        },
        {
            "model": "small",
            "messages": [
                {"role": "user", "content": f"Look up {CANARY}"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "lookup", "arguments": '{"q": "x"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": f"found {CANARY}"},
            ],
            "tools": [tool],
            "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        },
    )


def _messages(count_tokens: bool = False) -> tuple[dict[str, Any], ...]:
    bodies: list[dict[str, Any]] = [
        {
            "model": "sim-small",
            "max_tokens": 16,
            "system": f"Be brief. {CANARY}",
            "messages": [{"role": "user", "content": f"Hello {CANARY}"}],
            "temperature": 0.5,
            "top_p": 0.9,
            "top_k": 5,
            "stop_sequences": ["\n\n"],
            "metadata": {"user_id": "fuzz-user"},
            "stream": False,
            "service_tier": "auto",
        },
        {
            "model": "sim-small",
            "max_tokens": 2048,
            "stream": True,
            "system": [{"type": "text", "text": f"Policy {CANARY}", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": f"Describe {CANARY}"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG[22:]},
                        },
                        {
                            "type": "document",
                            "source": {"type": "text", "media_type": "text/plain", "data": f"doc {CANARY}"},
                        },
                    ],
                }
            ],
            "tools": [
                {
                    "name": "lookup",
                    "description": f"look it up {CANARY}",
                    "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
                }
            ],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
            "thinking": {"type": "enabled", "budget_tokens": 1024},
        },
        {
            "model": "small",
            "max_tokens": 16,
            "messages": [
                {"role": "user", "content": f"Look up {CANARY}"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": f"hmm {CANARY}", "signature": "sig"},
                        {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "content": f"found {CANARY}",
                            "is_error": False,
                        }
                    ],
                },
            ],
            "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "lookup"},
        },
    ]
    if count_tokens:
        for b in bodies:
            b.pop("max_tokens", None)
            b.pop("stream", None)
    return tuple(bodies)


def _responses() -> tuple[dict[str, Any], ...]:
    return (
        {
            "model": "sim-small",
            "input": f"Hello {CANARY}",
            "instructions": f"Be brief. {CANARY}",
            "max_output_tokens": 16,
            "temperature": 0.5,
            "top_p": 0.9,
            "stream": False,
            "store": False,
            "metadata": {"purpose": "fuzz"},
            "text": {"format": {"type": "text"}},
            "reasoning": {"effort": "low"},
            "tool_choice": "auto",
            "parallel_tool_calls": True,
            "user": "fuzz-user",
            "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}],
        },
        {
            "model": "sim-small",
            "stream": True,
            "input": [
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": f"Look {CANARY}"}],
                },
                {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": f"found {CANARY}"},
                {"type": "message", "role": "user", "content": [{"type": "input_image", "image_url": PNG}]},
            ],
            "text": {"format": {"type": "json_schema", "name": "a", "schema": {"type": "object"}}},
        },
    )


def _embeddings() -> tuple[dict[str, Any], ...]:
    return (
        {
            "model": "embedder",
            "input": f"embed {CANARY}",
            "encoding_format": "float",
            "dimensions": 8,
            "user": "u",
        },
        {"model": "embedder", "input": [f"one {CANARY}", f"two {CANARY}"]},
        {"model": "embedder", "input": [[1, 2, 3], [4, 5]]},
    )


ENDPOINTS = (
    Endpoint("chat", "POST", "/v1/chat/completions", False, _chat()),
    Endpoint("messages", "POST", "/v1/messages", True, _messages(), {"anthropic-version": "2023-06-01"}),
    Endpoint(
        "count_tokens",
        "POST",
        "/v1/messages/count_tokens",
        True,
        _messages(count_tokens=True),
        {"anthropic-version": "2023-06-01"},
    ),
    Endpoint("responses", "POST", "/v1/responses", False, _responses()),
    Endpoint("embeddings", "POST", "/v1/embeddings", False, _embeddings()),
    Endpoint("models", "GET", "/v1/models", False),
    Endpoint("models_anthropic", "GET", "/v1/models", True, (), {"anthropic-version": "2023-06-01"}),
    Endpoint("usage", "GET", "/v1/usage", False),
)
