"""Canonical values rendered as OpenAI JSON.

The canonical Structs use ``omit_defaults``, so fields the OpenAI wire
requires but whose value is the default (``object``, ``role``, a tool
call's ``type``, zero token counts) vanish when encoded; the official SDKs
need them, so they are put back here."""

from __future__ import annotations

from typing import Any

import msgspec

from adapters.canonical import ChatChunk, ChatResponse, EmbeddingResponse, Usage

_encoder = msgspec.json.Encoder()


def usage_json(usage: Usage) -> dict[str, Any]:
    total = usage.total_tokens or usage.prompt_tokens + usage.completion_tokens
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": total,
    }
    if usage.prompt_tokens_details is not None:
        out["prompt_tokens_details"] = {"cached_tokens": usage.cached_tokens}
        if usage.cache_creation_tokens:
            out["prompt_tokens_details"]["cache_creation_tokens"] = usage.cache_creation_tokens
    if usage.completion_tokens_details is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return out


def _tool_calls(calls: list[dict[str, Any]] | None) -> None:
    for call in calls or ():
        call.setdefault("type", "function")
        fn = call.setdefault("function", {})
        fn.setdefault("name", "")
        fn.setdefault("arguments", "")


def chat_response(resp: ChatResponse, model: str) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(resp)
    out["object"] = "chat.completion"
    out["model"] = model
    out.setdefault("created", 0)
    for choice in out["choices"]:
        msg = choice.setdefault("message", {})
        msg.setdefault("role", "assistant")
        msg.setdefault("content", None)
        _tool_calls(msg.get("tool_calls"))
        choice.setdefault("finish_reason", None)
        choice.setdefault("logprobs", None)
    if resp.usage is not None:
        out["usage"] = usage_json(resp.usage)
    return out


def encode_chat_response(resp: ChatResponse, model: str) -> bytes:
    return _encoder.encode(chat_response(resp, model))


def chunk_json(chunk: ChatChunk, model: str) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(chunk)
    out["object"] = "chat.completion.chunk"
    out["model"] = model
    out.setdefault("created", 0)
    for choice in out["choices"]:
        choice.setdefault("delta", {})
        choice.setdefault("finish_reason", None)
        for tc in choice["delta"].get("tool_calls") or ():
            if tc.get("id"):
                tc.setdefault("type", "function")
    if chunk.usage is not None:
        out["usage"] = usage_json(chunk.usage)
    return out


def embeddings_response(resp: EmbeddingResponse, model: str) -> bytes:
    data = [{"object": "embedding", "index": e.index, "embedding": e.embedding} for e in resp.data]
    usage = resp.usage
    prompt = usage.prompt_tokens if usage else 0
    total = (usage.total_tokens or prompt) if usage else 0
    return _encoder.encode(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": prompt, "total_tokens": total},
        }
    )
