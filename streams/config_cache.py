"""Response cache and request coalescing configuration.

cache:
  enabled: true           # the exact cache (Valkey)
  ttl_s: 3600
  max_entry_bytes: 1048576
  scope: key              # key | project | org: whose requests may share an answer
  coalesce: true          # identical concurrent requests make one upstream call
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import msgspec

if TYPE_CHECKING:
    from streams.config import NexusConfig

# Prompts that ask about "now" must not get yesterday's answer.  Matched
# (RE2, case-insensitive) against the text of the last user message.
DEFAULT_SKIP_PATTERNS: tuple[str, ...] = (
    r"\b(today|tonight|tomorrow|yesterday|right now|currently|latest|this (week|month|year))\b",
    r"\b(current|present) (date|time|price|weather|news|status)\b",
    r"\bwhat (time|day) is it\b",
)


class CacheConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    enabled: bool = False
    ttl_s: int = 3600
    max_entry_bytes: int = 1024 * 1024
    scope: Literal["key", "project", "org"] = "key"
    streams: bool = True  # cache streamed answers (replayed as streams)
    skip_patterns: tuple[str, ...] = DEFAULT_SKIP_PATTERNS
    coalesce: bool = False
    # Valkey round trips on the hot path are bounded: past this, a lookup
    # is a miss (the cache fails open, it never fails the request).
    lookup_timeout_ms: float = 50.0


class CacheConfigError(ValueError):
    pass


def validate_cache(cfg: NexusConfig) -> None:
    c = cfg.cache
    if not 60 <= c.ttl_s <= 7 * 24 * 3600:
        raise CacheConfigError("cache.ttl_s: between 60 s and 7 days")
    if not 1024 <= c.max_entry_bytes <= 64 * 1024 * 1024:
        raise CacheConfigError("cache.max_entry_bytes: between 1 KiB and 64 MiB")
    if not 0 < c.lookup_timeout_ms <= 5000:
        raise CacheConfigError("cache.lookup_timeout_ms: between 0 and 5000")
    import re2

    for i, p in enumerate(c.skip_patterns):
        if len(p) > 512:
            raise CacheConfigError(f"cache.skip_patterns[{i}]: at most 512 characters")
        try:
            re2.compile(p)
        except re2.error as exc:
            raise CacheConfigError(f"cache.skip_patterns[{i}]: {exc}") from None
