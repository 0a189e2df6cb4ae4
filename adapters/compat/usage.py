"""Provider usage dialects -> canonical cached_tokens.

DeepSeek reports prompt_cache_hit_tokens / prompt_cache_miss_tokens beside
prompt_tokens; Moonshot reports cached_tokens (older: prompt_cache_tokens)
at the top of usage.  The OpenAI decoder keeps only OpenAI's fields, so the
raw usage object is read again here for these two dialects.
"""

from __future__ import annotations

import msgspec

from adapters.canonical import PromptTokensDetails, Usage


class DialectUsage(msgspec.Struct):
    prompt_cache_hit_tokens: int | None = None
    cached_tokens: int | None = None
    prompt_cache_tokens: int | None = None


class _Envelope(msgspec.Struct):
    usage: DialectUsage | None = None


_decode = msgspec.json.Decoder(_Envelope).decode

# Cheap pre-checks so a stream chunk without these fields is not parsed twice.
MARKERS: dict[str, bytes] = {"deepseek": b"prompt_cache_hit_tokens", "moonshot": b"cache"}


def raw_usage(raw: bytes) -> DialectUsage | None:
    """The body's usage object, or None when absent or null."""
    try:
        return _decode(raw).usage
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None


def cached_tokens(dialect: str, raw: bytes) -> int | None:
    if MARKERS[dialect] not in raw:
        return None
    u = raw_usage(raw)
    return None if u is None else dialect_cached(dialect, u)


def dialect_cached(dialect: str, u: DialectUsage) -> int | None:
    if dialect == "deepseek":
        return u.prompt_cache_hit_tokens
    return u.cached_tokens if u.cached_tokens is not None else u.prompt_cache_tokens


def with_cached(usage: Usage, cached: int | None) -> Usage:
    if not cached or usage.cached_tokens:
        return usage
    details = usage.prompt_tokens_details or PromptTokensDetails()
    return msgspec.structs.replace(
        usage, prompt_tokens_details=msgspec.structs.replace(details, cached_tokens=cached)
    )
