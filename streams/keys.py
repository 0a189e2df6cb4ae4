"""Virtual keys: ``nvk_`` + 64 hex characters (32 random bytes).

Only HMAC-SHA256(secret, key) is ever stored; a presented key is hashed and
the digest compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

KEY_PREFIX = "nvk_"
_KEY_RE = re.compile(r"^nvk_[0-9a-f]{64}$")


def new_key() -> str:
    return KEY_PREFIX + secrets.token_hex(32)


def is_well_formed(key: str) -> bool:
    return bool(_KEY_RE.match(key))


def hash_key(key: str, secret: bytes) -> str:
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()


def same_digest(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def display_prefix(key: str) -> str:
    return key[:12]
