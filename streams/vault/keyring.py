"""Key-encryption keys (KEKs): versioned, derived from the master keys.

Version ``n`` is ``HKDF-SHA256(master key, salt, info="nexus vault kek n")``
of the master key its record names (``KeyVersion.master_key``), so a new
version can come from the same master key (a routine rotation) or from a
new one the source added (a master key rotation: once every data key is
rewrapped and the old versions retired, the old master key can leave the
source).  A version's *check value* (an HMAC of a fixed label under it)
travels with its record: a process whose master key derives a different
key refuses to use it, with a message that says so, instead of failing on
every credential with an authentication error.

A retired version is never used again, by anyone: whatever is still wrapped
by it fails closed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from streams.config_vault import KeyVersion
from streams.vault.master import MasterKeys

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# cryptography is imported where it is used: a gateway with no sealed
# credential starts without it (tests/gateway/test_import_footprint.py).

_SALT = b"nexus-vault/kek/v1"
_CHECK_LABEL = b"nexus-vault/kek-check/v1"
_FINGERPRINT_INFO = b"nexus vault fingerprint"


class VaultError(Exception):
    """A sealed secret that cannot be opened (or sealed), and why; the
    message names the credential and never holds a secret."""


def _hkdf(length: int, salt: bytes, info: bytes) -> Any:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info)


def derive_kek(master: bytes, version: int) -> bytes:
    derived: bytes = _hkdf(32, _SALT, b"nexus vault kek %d" % version).derive(master)
    return derived


def check_value(kek: bytes) -> str:
    return hmac.new(kek, _CHECK_LABEL, hashlib.sha256).hexdigest()[:16]


def fingerprint_key(master: bytes) -> bytes:
    """The key a master key gives secrets' fingerprints (never a KEK)."""
    derived: bytes = _hkdf(32, _SALT, _FINGERPRINT_INFO).derive(master)
    return derived


def fingerprint_with(key: bytes, secret: str) -> str:
    """A secret's keyed fingerprint (16 hex) under ``fingerprint_key(master)``:
    what the Hub records when it seals a secret, and what a node holding
    the master keys computes to recognise a secret it is shown (the proxy:
    a provider key in bumped traffic) without opening any credential."""
    return hmac.new(key, secret.encode(), hashlib.sha256).hexdigest()[:16]


def new_version(master: MasterKeys, existing: Iterable[KeyVersion], *, master_key: str = "") -> KeyVersion:
    """The next version's record, derived from ``master_key`` (default: the
    source's current one)."""
    kid = master_key or master.current_id
    key = master.get(kid)
    if key is None:
        raise VaultError(
            f"the master key {kid!r} is not in {master.source} (it has {', '.join(master.ids())})"
        )
    version = max((k.version for k in existing), default=0) + 1
    return KeyVersion(version=version, master_key=kid, check=check_value(derive_kek(key, version)))


class Keyring:
    """The KEK versions a process may use: the records (from the Hub's state
    or a snapshot) with the master keys of this process."""

    def __init__(self, master: MasterKeys | None, versions: Iterable[KeyVersion]) -> None:
        self.master = master
        self.versions = {k.version: k for k in versions}
        self._keks: dict[int, AESGCM] = {}

    @property
    def current(self) -> KeyVersion:
        """The newest version that is not retired: what new data keys and
        rewraps use."""
        live = [k for k in self.versions.values() if not k.retired]
        if not live:
            raise VaultError("the vault has no key version in service (rotate to create one)")
        return max(live, key=lambda k: k.version)

    def kek(self, version: int) -> AESGCM:
        """The AEAD of ``version``; raises VaultError when it may not (or
        cannot) be used here."""
        cached = self._keks.get(version)
        if cached is not None:
            return cached
        record = self.versions.get(version)
        if record is None:
            raise VaultError(f"key version {version} is unknown here")
        if record.retired:
            raise VaultError(f"key version {version} is retired")
        if self.master is None:
            raise VaultError("no vault master key is configured in this process")
        master = self.master.get(record.master_key)
        if master is None:
            raise VaultError(
                f"key version {version} derives from master key {record.master_key!r}, "
                f"which {self.master.source} does not hold"
            )
        kek = derive_kek(master, version)
        if not hmac.compare_digest(check_value(kek), record.check):
            raise VaultError(
                f"key version {version}: master key {record.master_key!r} here is not the one it was made "
                "with (check value differs)"
            )
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        aead = self._keks[version] = AESGCM(kek)
        return aead

    def fingerprint(self, secret: str) -> str:
        """A short name for a secret, to tell two apart: 16 hex of an HMAC
        under a key derived from the current master key, so that a short
        secret cannot be guessed from it by anyone without the master key."""
        if self.master is None:
            raise VaultError("no vault master key is configured in this process")
        kid = self.current.master_key
        master = self.master.get(kid)
        if master is None:
            raise VaultError(f"the master key {kid!r} is not in {self.master.source}")
        return fingerprint_with(fingerprint_key(master), secret)

    def __repr__(self) -> str:
        return f"Keyring(versions={sorted(self.versions)!r}, master={self.master!r})"
