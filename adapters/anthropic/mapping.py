"""Value mappings between Anthropic and the canonical shape, used in both
directions (provider codec and /v1/messages ingress)."""

from __future__ import annotations

import logging

from adapters.anthropic.wire import AnthropicUsage
from adapters.canonical import PromptTokensDetails, Usage

log = logging.getLogger("adapters.anthropic")

# json_schema output is produced by a forced tool whose input_schema is the
# caller's schema; its input comes back as the message content.  The name is
# reserved: a caller tool with this name is refused.
STRUCTURED_OUTPUT_TOOL = "nexus_structured_output"

STOP_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

FINISH_TO_STOP: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def finish_reason(stop_reason: str | None) -> str | None:
    if stop_reason is None:
        return None
    mapped = STOP_REASONS.get(stop_reason)
    if mapped is None:
        log.warning("anthropic: unknown stop_reason %r mapped to 'unknown'", stop_reason)
        return "unknown"
    return mapped


def stop_reason(finish: str | None) -> str:
    return FINISH_TO_STOP.get(finish or "stop", "end_turn")


def usage(u: AnthropicUsage) -> Usage:
    """Anthropic counts cache reads and writes apart from input_tokens; the
    canonical prompt_tokens includes them (as OpenAI's does)."""
    read = u.cache_read_input_tokens or 0
    write = u.cache_creation_input_tokens or 0
    prompt = (u.input_tokens or 0) + read + write
    completion = u.output_tokens or 0
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=(
            PromptTokensDetails(cached_tokens=read, cache_creation_tokens=write) if read or write else None
        ),
    )


def anthropic_usage(u: Usage | None) -> AnthropicUsage:
    if u is None:
        return AnthropicUsage(input_tokens=0, output_tokens=0)
    read, write = u.cached_tokens, u.cache_creation_tokens
    out = AnthropicUsage(
        input_tokens=max(0, u.prompt_tokens - read - write), output_tokens=u.completion_tokens
    )
    if read or write:
        out.cache_read_input_tokens = read
        out.cache_creation_input_tokens = write
    return out


# Output ceilings per model family, used when the caller set no max_tokens
# (Anthropic requires one).  Longest prefix wins; unknown models get the
# conservative default.
DEFAULT_MAX_TOKENS = 4096
MAX_TOKENS_BY_FAMILY: tuple[tuple[str, int], ...] = (
    ("claude-opus-4-5", 64000),
    ("claude-opus-4", 32000),
    ("claude-sonnet-4", 64000),
    ("claude-haiku-4", 64000),
    ("claude-3-7-sonnet", 64000),
    ("claude-3-5-sonnet", 8192),
    ("claude-3-5-haiku", 8192),
    ("claude-3-opus", 4096),
    ("claude-3-haiku", 4096),
)


# Families with extended thinking, and the budget an OpenAI-style
# reasoning_effort asks for.  Anthropic's minimum budget is 1024.
THINKING_FAMILIES = ("claude-3-7-sonnet", "claude-sonnet-4", "claude-opus-4", "claude-haiku-4")
EFFORT_BUDGET = {"low": 1024, "medium": 4096, "high": 16384}
MIN_THINKING_BUDGET = 1024


def supports_thinking(model: str) -> bool:
    name = model[model.find("claude") :] if "claude" in model else model
    return name.startswith(THINKING_FAMILIES)


def effort_thinking(effort: str | None, model: str, max_tokens: int | None) -> dict[str, object] | None:
    """reasoning_effort (low | medium | high) as an Anthropic thinking
    config, on models that think; the budget stays below a caller-set
    max_tokens (which must exceed it), and is skipped if that leaves too
    little."""
    budget = EFFORT_BUDGET.get(effort or "")
    if budget is None or not supports_thinking(model):
        return None
    if max_tokens is not None:
        budget = min(budget, max_tokens - MIN_THINKING_BUDGET)
        if budget < MIN_THINKING_BUDGET:
            return None
    return {"type": "enabled", "budget_tokens": budget}


def default_max_tokens(model: str) -> int:
    # Bedrock ids look like "anthropic.claude-sonnet-4-...-v1:0" or
    # "us.anthropic.claude-..."; match on the claude part.
    name = model[model.find("claude") :] if "claude" in model else model
    best = ""
    value = DEFAULT_MAX_TOKENS
    for prefix, n in MAX_TOKENS_BY_FAMILY:
        if name.startswith(prefix) and len(prefix) > len(best):
            best, value = prefix, n
    return value
