"""Gemini <-> canonical value mappings: finish reasons and usage."""

from __future__ import annotations

import logging

from adapters.canonical import CompletionTokensDetails, PromptTokensDetails, Usage
from adapters.gemini.wire import UsageMetadata

log = logging.getLogger("adapters.gemini")

FINISH_REASONS: dict[str, str] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "LANGUAGE": "content_filter",
    "MALFORMED_FUNCTION_CALL": "unknown",
    "OTHER": "unknown",
    "FINISH_REASON_UNSPECIFIED": "unknown",
}


def finish_reason(raw: str | None, has_tool_calls: bool) -> str | None:
    if raw is None:
        return None
    mapped = FINISH_REASONS.get(raw)
    if mapped is None:
        log.warning("gemini: unknown finishReason %r mapped to 'unknown'", raw)
        return "unknown"
    # Gemini says STOP after function calls; OpenAI clients look for tool_calls.
    if mapped == "stop" and has_tool_calls:
        return "tool_calls"
    return mapped


def usage(u: UsageMetadata | None) -> Usage | None:
    """promptTokenCount already includes cached tokens; candidatesTokenCount
    excludes thoughts, which OpenAI counts inside completion_tokens."""
    if u is None:
        return None
    prompt = u.prompt_token_count + u.tool_use_prompt_token_count
    completion = u.candidates_token_count + u.thoughts_token_count
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=u.total_token_count or prompt + completion,
        prompt_tokens_details=(
            PromptTokensDetails(cached_tokens=u.cached_content_token_count)
            if u.cached_content_token_count
            else None
        ),
        completion_tokens_details=(
            CompletionTokensDetails(reasoning_tokens=u.thoughts_token_count)
            if u.thoughts_token_count
            else None
        ),
    )
