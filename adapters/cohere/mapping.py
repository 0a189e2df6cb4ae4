"""Cohere <-> canonical value mappings."""

from __future__ import annotations

import logging

from adapters.canonical import PromptTokensDetails, Usage
from adapters.cohere.wire import CohereUsage

log = logging.getLogger("adapters.cohere")

FINISH_REASONS: dict[str, str] = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
    "ERROR": "unknown",
    "TIMEOUT": "unknown",
}


def finish_reason(raw: str | None) -> str | None:
    if raw is None:
        return None
    mapped = FINISH_REASONS.get(raw)
    if mapped is None:
        log.warning("cohere: unknown finish_reason %r mapped to 'unknown'", raw)
        return "unknown"
    return mapped


def usage(u: CohereUsage | None) -> Usage | None:
    # ``tokens`` counts what the model saw (incl. the prompt template);
    # ``billed_units`` is what is charged.  Accounting follows billing.
    if u is None:
        return None
    src = u.billed_units or u.tokens
    if src is None:
        return None
    prompt, completion, cached = int(src.input_tokens), int(src.output_tokens), int(u.cached_tokens)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached) if cached else None,
    )
