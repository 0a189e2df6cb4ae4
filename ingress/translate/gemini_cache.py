"""Google's cached contents (``POST /v1beta/cachedContents``, ``PATCH
.../cachedContents/{id}``; on Vertex AI under ``projects/{p}/locations/{l}/``):
a prompt stored at Google that a later generateContent uses by name
(``cachedContent: "cachedContents/..."``), so what it carries must pass the
request hooks when it is stored, not when it is used.

The body is forwarded as sent (as the hooks left it): no canonical form
exists for a stored prompt, and nothing in it is translated.  Its parts are
held to generateContent's rule (``gemini_generate.check_parts``): a part
that call would refuse (a part kind the hooks do not read, a ``fileData``
that is not an image) is refused here too, so a cache cannot carry what a
call could not.  The model it names (``models/...``, as sent) is the
request's model on record; an update (``PATCH``: Google allows only the
expiry) names none."""

from __future__ import annotations

from typing import Any

import msgspec

from adapters.gemini import wire as w
from ingress.translate.gemini_generate import check_parts, read_json

API = "cachedContents"


class CachedContent(msgspec.Struct, rename="camel"):
    """The fields of a cached content the hooks and the part check read;
    the others (ttl, expireTime, displayName, toolConfig) ride along."""

    model: str | None = None
    contents: list[w.Content] | None = None
    system_instruction: w.Content | None = None
    tools: list[dict[str, Any]] | None = None


def decode(body: bytes) -> CachedContent:
    """A cached content's body, its parts checked; CodecError (400) else."""
    cache = read_json(body, CachedContent, API)
    check_parts(cache.contents or [], cache.system_instruction, API)
    return cache


__all__ = ["API", "CachedContent", "decode"]
