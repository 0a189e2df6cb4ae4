"""Proxy authentication (Basic): who a flow belongs to.

``CredentialVerifier`` is the seam: ``ConfigCredentials`` checks the
config's proxy users (scrypt hashes, compared in constant time) and virtual
keys (their HMAC, as the gateway does); ``HubCredentials`` asks the Hub
whether an e-mail and password are one of its users' (NATS request-reply,
``streams.signin_wire``); ``CredentialChain`` tries them in turn.  A
successful check is remembered under an HMAC of the password with a
per-process key (never the password), so a browser opening fifty tunnels
does not pay fifty scrypt runs -- for a config user a few minutes, for a
Hub user ``proxy.auth.hub_remember_s``, after which the Hub is asked again.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from streams.config_snapshot import ConfigSnapshot
from streams.keys import hash_key, is_well_formed, same_digest
from streams.signin_wire import MAX_LOGIN, MAX_PASSWORD, SigninAnswer, SigninQuestion, decode_answer, encode

log = logging.getLogger("nexus.proxy")

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_REMEMBER_S = 300.0


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    org: str = ""
    project: str = ""
    key_id: str = ""
    method: str = "user"  # user | virtual_key | hub_user


class CredentialVerifier(Protocol):
    async def verify(self, username: str, password: str, *, source_ip: str = "") -> Identity | None: ...


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

    async def verify(self, username: str, password: str, *, source_ip: str = "") -> Identity | None:
        if self._keys and password.startswith("nvk_"):
            return self._virtual_key(password)
        user = self._users.get(username)
        if user is None:
            # The same work for an unknown name as for a wrong password
            # (with no config users there is no name to hide).
            if self._users:
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


class CredentialChain:
    """The first verifier that knows the credentials decides: the config's
    users and virtual keys, then the Hub's users."""

    def __init__(self, *verifiers: CredentialVerifier) -> None:
        self.verifiers = verifiers

    async def verify(self, username: str, password: str, *, source_ip: str = "") -> Identity | None:
        for verifier in self.verifiers:
            ident = await verifier.verify(username, password, source_ip=source_ip)
            if ident is not None:
                return ident
        return None


Ask = Callable[[bytes, float], Awaitable[bytes]]


@dataclass(slots=True)
class _Remembered:
    mark: bytes  # HMAC of the login and password under the per-process key
    ident: Identity
    stamp: int  # the user's stamp the Hub answered (streams.signin_wire)
    checked_until: float  # trusted without asking until then
    verified_until: float  # a recheck (no password) may renew it until then


class HubCredentials:
    """The Hub's users: their e-mail and password, checked by the Hub.

    The Hub applies its login guard and its stored hash and answers the
    user's id, org and stamp (hub.signin.proxy_verifier).  A yes is trusted
    for ``remember_s`` under an HMAC of the password; then the Hub is asked
    whether the user is still as they were (a recheck: no password, no
    scrypt), and with any other answer the password is checked again.  So a
    disabled or deleted user, or a changed password, stops working within
    ``remember_s`` and a recheck, and the password itself goes to the Hub
    again at least every ``reverify_s``.  While the Hub does not answer,
    a trusted yes keeps working until its window ends and everything else
    is refused.  Questions for the same credentials at once are asked once
    (a browser opens its tunnels together, and each password question would
    take a token from the Hub's per-login throttle).

    ``observe`` counts each outcome (the node's metrics): ``ok``,
    ``cached``, ``rechecked``, ``denied``, ``throttled``, ``unavailable``,
    ``malformed``.
    """

    def __init__(
        self,
        ask: Ask,
        *,
        node_id: str = "",
        remember_s: float = 10.0,
        reverify_s: float = 3600.0,
        timeout_s: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ask = ask
        self.node_id = node_id
        self.remember_s = remember_s
        self.reverify_s = reverify_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._memo_key = secrets.token_bytes(32)
        self._memo: dict[str, _Remembered] = {}  # by login
        self._flights: dict[bytes, asyncio.Task[Identity | None]] = {}
        self.observe: Callable[[str], None] = lambda _outcome: None

    async def verify(self, username: str, password: str, *, source_ip: str = "") -> Identity | None:
        if not username or not password or len(username) > MAX_LOGIN or len(password) > MAX_PASSWORD:
            return None
        login = username.strip().lower()
        mark = hmac.new(self._memo_key, f"{login}\0{password}".encode(), hashlib.sha256).digest()
        seen = self._remembered(login, mark)
        if seen is not None and self._clock() < seen.checked_until:
            self.observe("cached")
            return seen.ident
        flight = self._flights.get(mark)
        if flight is None:
            # A task of its own: a client hanging up does not cancel the
            # question the others wait on.
            flight = asyncio.create_task(self._settle(login, mark, password, source_ip))
            self._flights[mark] = flight
            flight.add_done_callback(lambda _t: self._flights.pop(mark, None))
        return await asyncio.shield(flight)

    def _remembered(self, login: str, mark: bytes) -> _Remembered | None:
        seen = self._memo.get(login)
        return seen if seen is not None and hmac.compare_digest(seen.mark, mark) else None

    async def _settle(self, login: str, mark: bytes, password: str, source_ip: str) -> Identity | None:
        seen = self._remembered(login, mark)
        if seen is not None and self._clock() < seen.verified_until:
            recheck = SigninQuestion(user=seen.ident.user, stamp=seen.stamp, node=self.node_id)
            answer = await self._question(recheck)
            if (
                answer is not None
                and self._yes(answer)
                and (answer.user, answer.stamp)
                == (
                    seen.ident.user,
                    seen.stamp,
                )
            ):
                self.observe("rechecked")
                seen.checked_until = self._clock() + self.remember_s
                return seen.ident
            self._memo.pop(login, None)
            if answer is None:
                return None  # the Hub away: nothing new is let in
            # The user changed (or is gone): the password decides again.
        question = SigninQuestion(login=login, password=password, source_ip=source_ip, node=self.node_id)
        answer = await self._question(question)
        if answer is None:
            return None
        if answer.throttled:
            self.observe("throttled")
            return None
        if not self._yes(answer):
            self.observe("denied")
            return None
        self.observe("ok")
        ident = Identity(user=answer.user, org=answer.org, method="hub_user")
        if self.remember_s > 0:
            if len(self._memo) > 100_000:
                self._memo.clear()
            now = self._clock()
            self._memo[login] = _Remembered(
                mark, ident, answer.stamp, now + self.remember_s, now + self.reverify_s
            )
        return ident

    @staticmethod
    def _yes(answer: SigninAnswer) -> bool:
        return answer.ok is True and not answer.throttled and bool(answer.user)

    async def _question(self, question: SigninQuestion) -> SigninAnswer | None:
        """The Hub's answer; None when there is none or it is not one."""
        try:
            data = await self._ask(encode(question), self.timeout_s)
        except Exception as exc:  # no responder, timeout, NATS away: no
            log.debug("proxy: the Hub did not answer a sign-in (%s)", type(exc).__name__)
            self.observe("unavailable")
            return None
        answer = decode_answer(data)
        if answer is None:
            self.observe("malformed")
        return answer


def nats_ask(nc: Any, subject: str) -> Ask:
    """Questions as NATS requests on ``subject`` through ``nc``."""

    async def ask(payload: bytes, timeout_s: float) -> bytes:
        msg = await nc.request(subject, payload, timeout=timeout_s)
        return bytes(msg.data)

    return ask
