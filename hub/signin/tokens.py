"""Admin API tokens and SCIM tokens (the ``api-token`` aggregate).

A token is ``nxt_`` (admin) or ``nxscim_`` (SCIM) + 64 hex characters (32
random bytes), shown once.  The CONFIG stream keeps HMAC-SHA256 of it under
the Hub's key-hashing secret with a label of its own (a token's digest is
never a virtual key's), in a ``key.issued`` event; revoking is a
``key.status_changed``.  A presented token is hashed and looked up in an
index of the active tokens' digests (a dict keyed by the digest: what is
compared is the digest of the presented value, so nothing leaks about
how much of a stored token a guess got right).

Deciding stays pure: the hash, the prefix and the clock come in the
command (``hub.decide`` hands these commands here).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hub.commands import Command, DomainError, invalid, not_found
from hub.state import USER, HubState, Resource
from streams.config_hub import ApiTokenSpec
from streams.events_config import ConfigEvent, KeyIssued, KeyStatusChanged, encode_spec

API_TOKEN = "api-token"  # noqa: S105 - an aggregate name
PREFIXES = {"admin": "nxt_", "scim": "nxscim_"}
_WELL_FORMED = re.compile(r"^(nxt_|nxscim_)[0-9a-f]{64}$")
_LABEL = b"nexus api token\x00"

Base = Callable[[Command, str, str], dict[str, Any]]


@dataclass(frozen=True, kw_only=True)
class IssueToken(Command):
    spec: ApiTokenSpec  # its id assigned
    hash: str
    prefix: str


@dataclass(frozen=True, kw_only=True)
class RevokeToken(Command):
    rid: str
    reason: str = ""


def new_token(kind: str) -> str:
    return PREFIXES[kind] + secrets.token_hex(32)


def well_formed(token: str) -> bool:
    return bool(_WELL_FORMED.match(token))


def kind_of(token: str) -> str:
    return "scim" if token.startswith(PREFIXES["scim"]) else "admin"


def token_hash(token: str, secret: bytes) -> str:
    return hmac.new(secret, _LABEL + token.encode(), hashlib.sha256).hexdigest()


def display_prefix(token: str) -> str:
    return token[: len(token.split("_", 1)[0]) + 9]


# --- deciding ------------------------------------------------------------------------


def handles(cmd: Command) -> bool:
    return isinstance(cmd, IssueToken | RevokeToken)


def token_event(state: HubState, cmd: Command, base: Base) -> ConfigEvent:
    if isinstance(cmd, IssueToken):
        spec = cmd.spec
        if state.version_of(API_TOKEN, spec.id):
            raise DomainError(409, "already_exists", f"token {spec.id!r} already exists")
        if spec.expires_at.timestamp() * 1000 <= cmd.at_ms:
            raise invalid("expires_at", "is in the past")
        if spec.kind == "admin":
            user = state.get(USER, spec.user)
            if user is None:
                raise invalid("user", f"unknown user {spec.user!r}")
            if user.spec.disabled:
                raise invalid("user", f"user {spec.user!r} is disabled")
        elif not spec.org or state.get("org", spec.org) is None:
            raise invalid("org", f"unknown org {spec.org!r}")
        return KeyIssued(
            **base(cmd, API_TOKEN, spec.id),
            spec=encode_spec(spec),
            hash=cmd.hash,
            prefix=cmd.prefix,
            status="active",
        )
    assert isinstance(cmd, RevokeToken)
    current = state.get(API_TOKEN, cmd.rid)
    if current is None or current.key is None:
        raise not_found("token", cmd.rid)
    if current.key.status != "active":
        raise DomainError(409, "invalid_transition", f"a {current.key.status} token cannot be revoked")
    return KeyStatusChanged(**base(cmd, API_TOKEN, cmd.rid), status="revoked", reason=cmd.reason)


# --- authenticating ------------------------------------------------------------------


class TokenIndex:
    """Active tokens by digest, rebuilt when the aggregate changes (the
    state replaces an aggregate's mapping whenever one of its items
    changes, so the mapping's identity is the version)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._source: Mapping[str, Resource] | None = None
        self._secret = b""
        self._by_hash: dict[str, Resource] = {}

    def lookup(self, state: HubState, secret: bytes, token: str) -> Resource | None:
        table = state.items.get(API_TOKEN, {})
        with self._lock:
            if table is not self._source or secret != self._secret:
                self._by_hash = {
                    r.key.hash: r for r in table.values() if r.key is not None and r.key.status == "active"
                }
                self._source, self._secret = table, secret
            return self._by_hash.get(token_hash(token, secret))


def usable(res: Resource, now_ms: int) -> bool:
    """Active and not past its expiry."""
    return (
        res.key is not None and res.key.status == "active" and res.spec.expires_at.timestamp() * 1000 > now_ms
    )
