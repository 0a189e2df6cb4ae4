"""Virtual-key authentication: the presented key is hashed under the HMAC
secret, looked up by digest, and the digest compared in constant time."""

from __future__ import annotations

import datetime as dt
import hmac

from multidict import CIMultiDictProxy

from ingress.gateway import errors
from streams.config import ConfigSnapshot, Model, VirtualKey
from streams.keys import hash_key, is_well_formed

_INACTIVE = {
    "expired": ("key_expired", "has expired"),
    "revoked": ("key_revoked", "has been revoked"),
    "pending": ("key_inactive", "is not active yet"),
    "rejected": ("key_inactive", "was rejected"),
}


def presented_key(headers: CIMultiDictProxy[str], native: str | None = None) -> str | None:
    """The virtual key from ``x-nexus-virtual-key`` or ``Authorization:
    Bearer``; a native route also accepts its SDK's own header (``native``,
    e.g. ``x-api-key`` on /v1/messages).  ``?key=`` is never read."""
    key = headers.get("x-nexus-virtual-key")
    if key:
        return key.strip()
    if native is not None:
        key = headers.get(native)
        if key:
            return key.strip()
    auth = headers.get("Authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


def authenticate(
    headers: CIMultiDictProxy[str], snapshot: ConfigSnapshot, native: str | None = None
) -> VirtualKey:
    key = presented_key(headers, native)
    if key is None:
        raise errors.missing_key()
    if not is_well_formed(key):
        raise errors.invalid_key()
    digest = hash_key(key, snapshot.hmac_secret)
    vk = snapshot.keys_by_hash.get(digest)
    if vk is None or not hmac.compare_digest(vk.hash.encode(), digest.encode()):
        raise errors.invalid_key()
    if vk.status != "active":
        raise errors.inactive_key(*_INACTIVE.get(vk.status, ("key_inactive", "is not active")))
    if vk.expires_at is not None:
        expires = vk.expires_at if vk.expires_at.tzinfo else vk.expires_at.replace(tzinfo=dt.UTC)
        if expires <= dt.datetime.now(dt.UTC):
            raise errors.inactive_key("key_expired", "has expired")
    return vk


def may_use(key: VirtualKey, model: Model, requested: str) -> bool:
    allowed = key.allowed_models
    if "*" in allowed or model.name in allowed or requested in allowed:
        return True
    return any(alias in allowed for alias in model.aliases)
