"""Admin sessions: a random bearer token, shown to its holder only; the Hub
keeps its sha256 in a JetStream KV bucket (shared by every Hub replica,
surviving restarts).

A session ends at the first of: its absolute end (``expires_at_ms``, set
when it opens), ``idle_s`` without a request, a logout, a revocation (the
user's own, an admin's, or every session of a user at once: SCIM
deprovisioning, a disabled account).  Each carries a CSRF token bound to it:
a write authenticated by the session cookie must send it back.

Keys in the bucket:

- ``t.<sha256(token)>`` -> the session;
- ``u.<sha256(user id)[:40]>.<session id>`` -> the token digest: the index
  that lists and revokes a user's sessions without the tokens.

The bucket's max age (the longest absolute lifetime allowed) removes what
nobody ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
from collections.abc import Callable
from typing import Protocol

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from hub.signin.kv import Bucket

TOKEN_PREFIX = "nxs_"  # noqa: S105 - a prefix, not a token
MAX_LIFETIME_S = 24 * 3600


class Session(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    created_at_ms: int
    expires_at_ms: int
    source_ip: str = ""
    user_agent: str = ""
    method: str = "password"  # how it was opened: password | oidc:<provider>
    id: str = ""  # public: names the session in lists and revocations
    idle_s: int = 0  # 0: no idle limit
    last_seen_ms: int = 0
    csrf: str = ""


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_hex(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _user_key(user_id: str) -> str:
    return hashlib.sha256(user_id.encode()).hexdigest()[:40]


def well_formed(token: str) -> bool:
    return token.startswith(TOKEN_PREFIX) and len(token) == len(TOKEN_PREFIX) + 64


class SessionStore(Protocol):
    async def create(self, session: Session) -> str: ...
    async def get(self, token: str) -> Session | None: ...
    async def delete(self, token: str) -> None: ...
    async def list_user(self, user_id: str) -> list[Session]: ...
    async def revoke(self, user_id: str, session_id: str) -> bool: ...
    async def revoke_user(self, user_id: str) -> int: ...


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class KvSessionStore:
    def __init__(self, bucket: Bucket, *, now_ms: Callable[[], int] = _now_ms) -> None:
        self._bucket = bucket
        self.lifetime_s = bucket.ttl_s
        self._now = now_ms
        # token digest -> (session, KV revision, cached until): a request does
        # not pay a KV round trip each.  A revocation on this replica drops
        # the entry at once; one on another replica is seen within
        # ``_cache_s`` (and a disabled or deleted user is refused at once by
        # every replica, from the control state).
        self._cache: dict[str, tuple[Session, int, float]] = {}
        self._cache_s = 1.0

    async def _kv(self) -> KeyValue:
        return await self._bucket.kv()

    async def create(self, session: Session) -> str:
        token = new_token()
        digest = token_digest(token)
        if not session.id:
            session = msgspec.structs.replace(session, id=secrets.token_hex(8))
        if not session.csrf:
            session = msgspec.structs.replace(session, csrf=secrets.token_urlsafe(32))
        if not session.last_seen_ms:
            session = msgspec.structs.replace(session, last_seen_ms=session.created_at_ms)
        kv = await self._kv()
        await kv.put(f"t.{digest}", msgspec.json.encode(session))
        await kv.put(f"u.{_user_key(session.user_id)}.{session.id}", digest.encode())
        return token

    async def _load(self, digest: str) -> tuple[Session | None, int]:
        kv = await self._kv()
        try:
            entry = await kv.get(f"t.{digest}")
        except KeyNotFoundError:
            return None, 0
        if not entry.value:
            return None, 0
        try:
            return msgspec.json.decode(entry.value, type=Session), entry.revision or 0
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None, 0

    async def get(self, token: str) -> Session | None:
        if not well_formed(token):
            return None
        digest = token_digest(token)
        mono = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[2] > mono:
            session, revision = hit[0], hit[1]
        else:
            loaded, revision = await self._load(digest)
            if loaded is None:
                self._cache.pop(digest, None)
                return None
            session = loaded
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (session, revision, mono + self._cache_s)
        now = self._now()
        if session.expires_at_ms <= now or (
            session.idle_s and now - session.last_seen_ms > session.idle_s * 1000
        ):
            await self._remove(digest, session)
            return None
        if session.idle_s and now - session.last_seen_ms > min(60_000, session.idle_s * 100):
            session = await self._touch(digest, session, revision, now)
        return session

    async def _touch(self, digest: str, session: Session, revision: int, now: int) -> Session:
        """Move last_seen on, at most about once a minute (not a KV write per
        request).  Compare-and-set on the revision read, so a session
        revoked meanwhile on another replica is not written back to life."""
        touched = msgspec.structs.replace(session, last_seen_ms=now)
        kv = await self._kv()
        try:
            new_rev = await kv.update(f"t.{digest}", msgspec.json.encode(touched), last=revision)
        except KeyWrongLastSequenceError:
            self._cache.pop(digest, None)
            fresh, rev = await self._load(digest)
            if fresh is None:
                return session  # revoked meanwhile: refused from the next request on
            self._cache[digest] = (fresh, rev, time.monotonic() + self._cache_s)
            return fresh
        self._cache[digest] = (touched, new_rev, time.monotonic() + self._cache_s)
        return touched

    async def _remove(self, digest: str, session: Session | None) -> None:
        self._cache.pop(digest, None)
        kv = await self._kv()
        with contextlib.suppress(KeyNotFoundError):
            await kv.delete(f"t.{digest}")
        if session is not None and session.id:
            with contextlib.suppress(KeyNotFoundError):
                await kv.delete(f"u.{_user_key(session.user_id)}.{session.id}")

    async def delete(self, token: str) -> None:
        if not well_formed(token):
            return
        digest = token_digest(token)
        session, _ = await self._load(digest)
        await self._remove(digest, session)

    async def _index(self, user_id: str) -> list[tuple[str, str]]:
        """(session id, token digest) of every session of the user."""
        # Exact (streams.kv_scan): nats-py's watch could end its initial
        # values before a session written just before, and revoking it
        # then answered 404 (the IAM matrix test saw it).
        prefix = f"u.{_user_key(user_id)}."
        items = await self._bucket.items(prefix=prefix)
        return [(item.key[len(prefix) :], item.value.decode()) for item in items if item.value]

    async def list_user(self, user_id: str) -> list[Session]:
        found = await asyncio.gather(*(self._load(digest) for _, digest in await self._index(user_id)))
        now = self._now()
        live = [
            s
            for s, _ in found
            if s is not None
            and s.expires_at_ms > now
            and not (s.idle_s and now - s.last_seen_ms > s.idle_s * 1000)
        ]
        return sorted(live, key=lambda s: s.created_at_ms)

    async def revoke(self, user_id: str, session_id: str) -> bool:
        for sid, digest in await self._index(user_id):
            if sid == session_id:
                session, _ = await self._load(digest)
                await self._remove(digest, session or _stub(user_id, sid))
                return session is not None
        return False

    async def revoke_user(self, user_id: str) -> int:
        n = 0
        for sid, digest in await self._index(user_id):
            session, _ = await self._load(digest)
            n += session is not None
            await self._remove(digest, session or _stub(user_id, sid))
        return n


def _stub(user_id: str, session_id: str) -> Session:
    """What removing an index entry whose session is already gone needs."""
    return Session(user_id=user_id, created_at_ms=0, expires_at_ms=0, id=session_id)
