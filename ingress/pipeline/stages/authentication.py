"""Who is calling: the virtual key.  The presented key is hashed under the
HMAC secret, looked up by digest, and the digest compared in constant
time; an inactive, expired or (after its grace period) rotated key is
refused."""

from __future__ import annotations

import datetime as dt
import hmac

from ingress.pipeline import errors
from ingress.pipeline.exchange import Exchange, Headers, Next
from streams.config import Model, VirtualKey
from streams.config_snapshot import ConfigSnapshot
from streams.keys import hash_key, is_well_formed

_INACTIVE = {
    "expired": ("key_expired", "has expired"),
    "revoked": ("key_revoked", "has been revoked"),
    "pending": ("key_inactive", "is not active yet"),
    "rejected": ("key_inactive", "was rejected"),
}


def presented_key(headers: Headers, native: str | None = None, query: str | None = None) -> str | None:
    """The virtual key from ``x-nexus-virtual-key`` or ``Authorization:
    Bearer``; a native route also accepts its SDK's own header (``native``,
    e.g. ``x-api-key`` on /v1/messages) and, on the Gemini routes only, the
    ``?key=`` its REST callers use (``query``: the key the URL carried)."""
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
    return query.strip() if query else None


def authenticate(
    headers: Headers, snapshot: ConfigSnapshot, native: str | None = None, query: str | None = None
) -> VirtualKey:
    key = presented_key(headers, native, query)
    if key is None:
        raise errors.missing_key()
    if not is_well_formed(key):
        raise errors.invalid_key()
    digest = hash_key(key, snapshot.hmac_secret)
    vk = snapshot.keys_by_hash.get(digest)
    if vk is None:
        raise errors.invalid_key()
    if not hmac.compare_digest(vk.hash.encode(), digest.encode()):
        # The old key of a rotation: valid until its grace period ends.
        grace = vk.previous_hash_expires_at
        if (
            grace is None
            or not hmac.compare_digest(vk.previous_hash.encode(), digest.encode())
            or _aware(grace) <= dt.datetime.now(dt.UTC)
        ):
            raise errors.invalid_key()
    if vk.status != "active":
        raise errors.inactive_key(*_INACTIVE.get(vk.status, ("key_inactive", "is not active")))
    if vk.expires_at is not None and _aware(vk.expires_at) <= dt.datetime.now(dt.UTC):
        raise errors.inactive_key("key_expired", "has expired")
    return vk


async def authentication(ex: Exchange, next: Next) -> None:
    spec = ex.spec
    native = spec.key_header if spec is not None else None
    query = spec.query_key(ex.inbound.query) if spec is not None and spec.query_key is not None else None
    ex.set_key(authenticate(ex.inbound.headers, ex.rt.snapshot, native, query))
    await next(ex)


def _aware(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def may_use(key: VirtualKey, model: Model, requested: str) -> bool:
    allowed = key.allowed_models
    if "*" in allowed or model.name in allowed or requested in allowed:
        return True
    return any(alias in allowed for alias in model.aliases)


def require_admin(headers: Headers, token: str) -> None:
    """An operator's request: ``Authorization: Bearer`` must equal the admin
    token (``auth.admin_token_env``), compared in constant time; with no
    token configured every such request is refused."""
    scheme, _, value = (headers.get("Authorization") or "").partition(" ")
    ok = (
        bool(token)
        and scheme.lower() == "bearer"
        and hmac.compare_digest(value.strip().encode(), token.encode())
    )
    if not ok:
        raise errors.GatewayError(
            401,
            "authentication_error",
            "invalid_admin_token",
            "A valid admin token is required.",
            stage="auth",
        )
