"""The exact-cache key and the skip rule for time-sensitive prompts.

Key = sha256 over a version tag, the config version (a new price, hook or
route set never serves answers made under the old one), the caller's
endpoint (entries are the bytes the caller received, in its format), the
requested model, the provider and provider model, the canonical (key-sorted)
JSON of the body prepared for the provider and of the caller's body (fields
the canonical request does not carry still change the answer), and the
tenant scope.  Only the digest reaches Valkey, never the payload."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import msgspec
import re2

_any: msgspec.json.Decoder[Any] = msgspec.json.Decoder()
_sorted = msgspec.json.Encoder(order="sorted")

VERSION = b"nexus-exact/v1"


def canonical_json(body: bytes) -> bytes:
    try:
        return _sorted.encode(_any.decode(body))
    except (msgspec.DecodeError, TypeError):
        return body  # not JSON: the bytes themselves


def exact_key(
    *,
    config_version: str,
    endpoint: str,
    requested_model: str,
    provider: str,
    provider_model: str,
    prepared_body: bytes,
    caller_body: bytes,
    scope: str,
) -> str:
    h = hashlib.sha256(VERSION)
    for part in (config_version, endpoint, requested_model, provider, provider_model, scope):
        h.update(b"\n")
        h.update(part.encode())
    for body in (prepared_body, caller_body):
        c = canonical_json(body)
        h.update(b"\n%d\n" % len(c))
        h.update(c)
    return h.hexdigest()


@lru_cache(maxsize=64)
def _compiled(patterns: tuple[str, ...]) -> Any:
    if not patterns:
        return None
    options = re2.Options()
    options.case_sensitive = False
    return re2.compile("|".join(f"(?:{p})" for p in patterns), options)


def time_sensitive(texts: Iterable[str], patterns: tuple[str, ...]) -> bool:
    rx = _compiled(patterns)
    return rx is not None and any(rx.search(t) for t in texts)
