"""Provider keys seen in bumped traffic, recorded only as fingerprints.

A key in ``Authorization: Bearer``, ``x-api-key``, ``api-key`` or
``x-goog-api-key`` (or, on Google's hosts, the URL's ``?key=``) becomes
HMAC-SHA256(secret, key) cut to 16 hex digits:
stable (the same key gives the same fingerprint on every node with the same
secret), useless for recovering the key.  It is classified ``corporate``
when it is one of the organisation's own provider credentials (the config's
provider keys, and the Hub vault's sealed credentials by the keyed
fingerprint recorded when each was sealed),
``nexus`` for a Nexus virtual key, else ``unknown`` (a personal key: shadow
AI).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping
from typing import Protocol

from ingress.http1.message import Headers
from ingress.translate.gemini_generate import query_key
from streams.config import Provider
from streams.config_vault import VaultCredential
from streams.vault.keyring import fingerprint_key, fingerprint_with
from streams.vault.master import MasterKeys

_HEADERS = ("x-api-key", "api-key", "x-goog-api-key")


def fingerprint(secret: bytes, key: str) -> str:
    return hmac.new(secret, b"provider-key\0" + key.encode(), hashlib.sha256).hexdigest()[:16]


def presented_key(headers: Headers) -> str:
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    for name in _HEADERS:
        value = headers.get(name)
        if value and value.strip():
            return value.strip()
    return ""


class KnownCredentials(Protocol):
    def classify(self, fp: str) -> str: ...


class ConfigCredentials:
    """The organisation's provider keys, as fingerprints only: the configured
    providers' keys read from the environment once, and the vault's sealed
    credentials, recognised by the keyed fingerprint the Hub recorded when
    it sealed each one (``VaultCredential.fingerprint``) -- computed here
    from the presented key under each master key this node holds, so no
    credential is ever opened (without master keys, vault credentials are
    not recognised)."""

    def __init__(
        self,
        secret: bytes,
        providers: Iterable[Provider],
        env: Mapping[str, str] | None = None,
        *,
        vault: Iterable[VaultCredential] = (),
        masters: MasterKeys | None = None,
    ) -> None:
        env = os.environ if env is None else env
        self.secret = secret
        names = [p.api_key_env for p in providers if p.api_key_env]
        names += [c.env for p in providers for c in p.credentials]
        self._known = {fingerprint(secret, env[n]) for n in names if env.get(n)}
        self._vault = frozenset(c.fingerprint for c in vault if c.fingerprint)
        # One derived key per master key (a rotation keeps the old one listed).
        self._vault_keys = (
            [fingerprint_key(key) for _, key in masters.keys] if masters is not None and self._vault else []
        )

    def classify(self, fp: str) -> str:
        return "corporate" if fp in self._known else "unknown"

    def in_vault(self, key: str) -> bool:
        return any(fingerprint_with(k, key) in self._vault for k in self._vault_keys)

    def inspect(self, headers: Headers, query: str = "") -> tuple[str, str]:
        """(fingerprint, class) of the key a request presents; ``query``: the
        query string of a request whose ``?key=`` is a credential (Google's
        REST convention), read when no header carries one."""
        key = presented_key(headers) or (query_key(query) or "").strip()
        if not key:
            return "", ""
        fp = fingerprint(self.secret, key)
        if key.startswith("nvk_"):
            return fp, "nexus"
        if fp in self._known or self.in_vault(key):
            return fp, "corporate"
        return fp, "unknown"
