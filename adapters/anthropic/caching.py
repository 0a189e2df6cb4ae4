"""Prompt-cache breakpoints from nexus_ext.anthropic.cache_control.

``true`` (or a cache_control object such as {"type": "ephemeral", "ttl":
"1h"}) marks the three prefixes worth caching: the end of the tools, the end
of the system prompt, and the last block of the last user turn (so the whole
conversation so far is reused by the next call).  Anthropic allows four
breakpoints; three leaves one for the caller.
"""

from __future__ import annotations

from typing import Any

import msgspec

from adapters.anthropic import wire as w
from adapters.wirekit.errors import unsupported


def requested(ext: dict[str, Any]) -> w.CacheControl | None:
    raw = ext.get("cache_control")
    if raw is None or raw is False:
        return None
    if raw is True:
        return w.CacheControl(type="ephemeral")
    try:
        return msgspec.convert(raw, w.CacheControl)
    except msgspec.ValidationError as e:
        raise unsupported("anthropic", f"nexus_ext.anthropic.cache_control is invalid ({e})") from None


def mark(body: w.MessagesRequest, cc: w.CacheControl) -> None:
    if body.tools:
        body.tools[-1].cache_control = cc
    if isinstance(body.system, str):
        body.system = [w.TextBlock(text=body.system, cache_control=cc)]
    elif body.system:
        body.system[-1].cache_control = cc
    for msg in reversed(body.messages):
        if msg.role == "user" and isinstance(msg.content, list) and msg.content:
            last = msg.content[-1]
            if not isinstance(last, w.ThinkingBlock | w.RedactedThinkingBlock):
                last.cache_control = cc
            break


def present(req: w.MessagesRequest) -> w.CacheControl | None:
    """The first cache_control an Anthropic client put in its request (for
    the /v1/messages ingress, so caching survives translation)."""
    for t in req.tools or []:
        if t.cache_control:
            return t.cache_control
    if isinstance(req.system, list):
        for b in req.system:
            if b.cache_control:
                return b.cache_control
    for m in req.messages:
        if isinstance(m.content, list):
            for blk in m.content:
                cc = getattr(blk, "cache_control", None)
                if cc is not None:
                    return cc  # type: ignore[no-any-return]
    return None
