"""Bedrock <-> canonical value mappings."""

from __future__ import annotations

import logging

from adapters.bedrock.wire import TokenUsage
from adapters.canonical import PromptTokensDetails, Usage

log = logging.getLogger("adapters.bedrock")

STOP_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}


def finish_reason(raw: str | None) -> str | None:
    if raw is None:
        return None
    mapped = STOP_REASONS.get(raw)
    if mapped is None:
        log.warning("bedrock: unknown stopReason %r mapped to 'unknown'", raw)
        return "unknown"
    return mapped


def usage(u: TokenUsage | None) -> Usage | None:
    """inputTokens excludes cache reads/writes; prompt_tokens includes them."""
    if u is None:
        return None
    read, write = u.cache_read_input_tokens, u.cache_write_input_tokens
    prompt = u.input_tokens + read + write
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=u.output_tokens,
        total_tokens=prompt + u.output_tokens,
        prompt_tokens_details=(
            PromptTokensDetails(cached_tokens=read, cache_creation_tokens=write) if read or write else None
        ),
    )
