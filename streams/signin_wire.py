"""What a proxy and the Hub say to each other to check a Hub user's
password (NATS request-reply on ``Topology.proxy_signin_subject``).

The proxy sends the e-mail and password a client gave in
``Proxy-Authorization: Basic`` with the client's address; one Hub replica
(a queue group) checks them as its own sign-in does -- the login guard's
throttling and lockout first, then the stored scrypt hash -- and answers
who the user is, or no.  Password hashes never leave the Hub.

An answer is ``ok`` only with a user id; everything else is a refusal that
says nothing about why (unknown e-mail, wrong password, disabled user, a
user without a password all look alike).  ``throttled`` tells the proxy's
metrics the guard refused before any password was checked.

A yes carries the user's ``stamp``: the CONFIG sequence of their last
change (disabled, deleted, a new password, a new org all move it).  Once
its remembered window ends, the proxy asks again without the password --
``user`` and ``stamp`` only, a *recheck* -- and the Hub answers yes while
the user is as they were: a dictionary look-up instead of a scrypt, so a
short window costs the Hub almost nothing.  Any other answer sends the
proxy back to a full check with the password.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

# Longer than any e-mail or password a person types; bounds what one
# question can make the Hub hash.
MAX_LOGIN = 320
MAX_PASSWORD = 1024
QUEUE = "nexus-hub-proxy-signin"


class SigninQuestion(msgspec.Struct, frozen=True, kw_only=True):
    # A sign-in: the e-mail and password.
    login: Annotated[str, msgspec.Meta(max_length=MAX_LOGIN)] = ""
    password: Annotated[str, msgspec.Meta(max_length=MAX_PASSWORD)] = ""
    source_ip: Annotated[str, msgspec.Meta(max_length=64)] = ""
    node: Annotated[str, msgspec.Meta(max_length=256)] = ""
    # A recheck (no login, no password): is ``user`` still at ``stamp``?
    user: Annotated[str, msgspec.Meta(max_length=256)] = ""
    stamp: int = 0


class SigninAnswer(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool = False
    throttled: bool = False
    user: str = ""
    org: str = ""
    stamp: int = 0


DENIED = SigninAnswer()
THROTTLED = SigninAnswer(throttled=True)


def encode(message: SigninQuestion | SigninAnswer) -> bytes:
    return msgspec.json.encode(message)


def decode_question(data: bytes) -> SigninQuestion | None:
    """The question, or None when it is not one (too long, malformed)."""
    try:
        return msgspec.json.decode(data, type=SigninQuestion)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def decode_answer(data: bytes) -> SigninAnswer | None:
    """The answer, or None when it is not one: a refusal for the caller."""
    try:
        return msgspec.json.decode(data, type=SigninAnswer)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
