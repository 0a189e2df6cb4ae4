"""scrypt password hashes, self-describing: ``scrypt$N$r$p$salt$digest``
(salt and digest base64), so the cost can be raised without invalidating
stored hashes: a sign-in with a hash weaker than today's parameters stores a
new one (``needs_rehash``).

Today's parameters are N=2^15, r=8, p=3: one of OWASP's equivalent scrypt
settings (as strong as N=2^17, p=1) with 32 MiB of memory per hash instead
of 128, so a burst of sign-ins cannot take a small Hub's memory.  Part 1
stored N=2^14, p=1; those are upgraded at their next sign-in.  A hash costs
~0.15-0.4 s of CPU on purpose: call these off the event loop."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

_N, _R, _P, _LEN = 2**15, 8, 3, 32
MIN_LENGTH = 12


class WeakPassword(ValueError):
    pass


def check_strength(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"at least {MIN_LENGTH} characters")
    if len(set(password)) < 5:
        raise WeakPassword("too few different characters")


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=_LEN, maxmem=128 * _N * _R + 16 * 1024 * 1024
    )
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=128 * int(n) * int(r) + 16 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def needs_rehash(stored: str) -> bool:
    """True when ``stored`` is weaker than what hash_password makes today."""
    try:
        scheme, n, r, p, _salt, digest = stored.split("$")
        cost, block, par = int(n), int(r), int(p)
        length = len(base64.b64decode(digest))
    except (ValueError, TypeError):
        return True
    return scheme != "scrypt" or cost * par < _N * _P or block < _R or length < _LEN


@functools.cache
def dummy_hash() -> str:
    """A hash of nothing anyone knows: verifying against it when the user
    does not exist makes a wrong e-mail take as long as a wrong password."""
    return hash_password(secrets.token_urlsafe(32))


def random_password() -> str:
    """A one-time password for a bootstrap admin: 24 characters, ~143 bits."""
    return secrets.token_urlsafe(18)
