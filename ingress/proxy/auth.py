"""Proxy authentication (Basic): who a flow belongs to.

``CredentialVerifier`` is the seam the Hub will implement (its users and
tokens); until then ``ConfigCredentials`` checks the config's proxy users
(scrypt hashes, compared in constant time) and virtual keys (their HMAC,
as the gateway does).  A successful scrypt check is remembered for a few
minutes under an HMAC of the password with a per-process key, so a browser
opening fifty tunnels does not pay fifty scrypt runs.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from typing import Protocol

from streams.config_snapshot import ConfigSnapshot
from streams.keys import hash_key, is_well_formed, same_digest

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_REMEMBER_S = 300.0


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    org: str = ""
    project: str = ""
    key_id: str = ""
    method: str = "user"  # user | virtual_key


class CredentialVerifier(Protocol):
    async def verify(self, username: str, password: str) -> Identity | None: ...


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def check_password(password: str, encoded: str) -> bool:
    try:
        _, n, r, p, salt, digest = encoded.split("$")
        got = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=len(digest) // 2
        )
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(got, bytes.fromhex(digest))


def parse_basic(header: str | None) -> tuple[str, str] | None:
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


class ConfigCredentials:
    def __init__(self, snapshot: ConfigSnapshot) -> None:
        self._snapshot = snapshot
        cfg = snapshot.config.proxy.auth
        self._users = {u.name: u for u in cfg.users}
        self._keys = cfg.virtual_keys
        self._memo_key = secrets.token_bytes(32)
        self._memo: dict[str, tuple[bytes, float]] = {}

    async def verify(self, username: str, password: str) -> Identity | None:
        if self._keys and password.startswith("nvk_"):
            return self._virtual_key(password)
        user = self._users.get(username)
        if user is None:
            # The same work for an unknown name as for a wrong password.
            await asyncio.to_thread(check_password, password, _DUMMY)
            return None
        mark = hmac.new(self._memo_key, f"{username}\0{password}".encode(), hashlib.sha256).digest()
        seen = self._memo.get(username)
        now = time.monotonic()
        if seen is not None and now < seen[1] and hmac.compare_digest(seen[0], mark):
            ok = True
        else:
            ok = await asyncio.to_thread(check_password, password, user.password_hash)
            if ok:
                self._memo[username] = (mark, now + _REMEMBER_S)
        if not ok:
            return None
        return Identity(user=user.name, org=user.org, project=user.project, method="user")

    def _virtual_key(self, key: str) -> Identity | None:
        snap = self._snapshot
        if not is_well_formed(key):
            return None
        digest = hash_key(key, snap.hmac_secret)
        vk = snap.keys_by_hash.get(digest)
        if vk is None or not same_digest(vk.hash, digest) or vk.status != "active":
            return None
        if vk.expires_at is not None:
            expires = vk.expires_at if vk.expires_at.tzinfo else vk.expires_at.replace(tzinfo=dt.UTC)
            if expires <= dt.datetime.now(dt.UTC):
                return None
        return Identity(
            user=vk.user or vk.id, org=vk.org, project=vk.project, key_id=vk.id, method="virtual_key"
        )


_DUMMY = "scrypt$16384$8$1$" + "00" * 16 + "$" + "00" * 32
