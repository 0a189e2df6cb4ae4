"""The login guard: throttling and lockout for password sign-in, shared by
every Hub replica through one JetStream KV bucket.

Why JetStream KV and not Valkey: the Hub's shared state already lives in
NATS (the CONFIG stream, sessions); a Hub needs no Valkey to run, and a
bucket's per-key revision gives the compare-and-set a token bucket needs,
so two replicas counting attempts at once both count.  Sign-in attempts are
rare enough that a KV round trip each is nothing.

- Two token buckets per attempt: one per source IP (an IPv6 address counts
  by its /64: one host holds a whole /64), one per login name.  Both are
  taken *before* the password is checked, so a flood costs no scrypt.
- The login name is the normalised e-mail whether or not a user has it: an
  unknown address is throttled and locked exactly like a known one, so the
  answers say nothing about which addresses exist.
- ``lockout_failures`` wrong passwords in a row lock the name for
  ``lockout_seconds``; a right password resets the count.  While locked no
  password is checked at all.

KV keys are sha256 prefixes of the name or address, never the values.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from hub.signin.kv import Bucket, hashed
from streams.config_hub import SigninSettings

Clock = Callable[[], float]  # seconds


class _Tokens(msgspec.Struct):
    tokens: float
    at: float  # seconds


class _Failures(msgspec.Struct):
    count: int = 0
    locked_until: float = 0.0


@dataclass(frozen=True)
class Refusal:
    code: str  # rate_limited | locked_out
    retry_after_s: int
    scope: str  # ip | login


@dataclass(frozen=True)
class Lockout:
    """A lock that just began (the audit record says so)."""

    failures: int
    until: float


def login_name(email: str) -> str:
    return email.strip().lower()


def ip_scope(ip: str) -> str:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip or "unknown"
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr.ipv4_mapped or addr) if isinstance(addr, ipaddress.IPv6Address) else str(addr)


class LoginGuard:
    def __init__(self, bucket: Bucket, *, clock: Clock = time.time) -> None:
        self._bucket = bucket
        self._clock = clock

    async def admit(self, settings: SigninSettings, email: str, ip: str) -> Refusal | None:
        """Take one attempt from the IP's and the name's bucket; a refusal
        when either is empty or the name is locked."""
        now = self._clock()
        name = login_name(email)
        failures, _ = await self._bucket.read(hashed("fail", name), _Failures)
        if failures is not None and failures.locked_until > now:
            return Refusal("locked_out", _ceil(failures.locked_until - now), "login")
        wait = await self._take(hashed("ip", ip_scope(ip)), settings.ip_burst, settings.ip_per_minute, now)
        if wait:
            return Refusal("rate_limited", wait, "ip")
        wait = await self._take(hashed("login", name), settings.login_burst, settings.login_per_minute, now)
        if wait:
            return Refusal("rate_limited", wait, "login")
        return None

    async def _take(self, key: str, burst: int, per_minute: float, now: float) -> int:
        """0 when a token was taken, else the seconds until one is there."""
        wait = 0

        def take(cur: _Tokens | None) -> _Tokens | None:
            nonlocal wait
            refill = 0.0 if cur is None else (now - cur.at) * per_minute / 60
            tokens = float(burst) if cur is None else min(float(burst), cur.tokens + refill)
            if tokens < 1.0:
                wait = _ceil((1.0 - tokens) * 60 / per_minute)
                return None
            wait = 0
            return _Tokens(tokens=tokens - 1.0, at=now)

        await self._bucket.change(key, _Tokens, take)
        return wait

    async def failed(self, settings: SigninSettings, email: str) -> Lockout | None:
        """Count a wrong password; the lockout when this one started it."""
        if settings.lockout_failures <= 0:
            return None
        now = self._clock()
        started: Lockout | None = None

        def count(cur: _Failures | None) -> _Failures:
            nonlocal started
            n = (cur.count if cur is not None and cur.locked_until <= now else 0) + 1
            if n >= settings.lockout_failures:
                started = Lockout(n, now + settings.lockout_seconds)
                return _Failures(count=0, locked_until=started.until)
            started = None
            return _Failures(count=n, locked_until=0.0)

        await self._bucket.change(hashed("fail", login_name(email)), _Failures, count)
        return started

    async def succeeded(self, email: str) -> None:
        key = hashed("fail", login_name(email))
        current, _ = await self._bucket.read(key, _Failures)
        if current is not None:
            await self._bucket.delete(key)

    async def unlock(self, email: str) -> bool:
        """An admin lifts a lockout; True when there was one."""
        key = hashed("fail", login_name(email))
        current, _ = await self._bucket.read(key, _Failures)
        if current is None:
            return False
        await self._bucket.delete(key)
        return current.locked_until > self._clock()


def _ceil(seconds: float) -> int:
    return max(1, int(seconds + 0.999))
