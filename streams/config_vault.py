"""The ``vault:`` section: provider credentials as the Hub seals them, in the
shape every node receives them in a snapshot.

A credential's secret is here only as ciphertext: AES-256-GCM under a data
key of its own (``SealedSecret``).  The data key is not here at all: it
lives wrapped (encrypted by a key-encryption key) in the vault bucket,
under the id ``SealedSecret.dek`` (``streams.vault.keystore``), where a
rotation rewraps it in place.  ``keys`` lists the key-encryption key
versions: each is derived from a master key the Hub and the nodes hold
(``streams.vault.master``), and carries a check value so a node can tell
that its master key is the Hub's before it opens anything.

A provider uses a sealed credential by naming it (``Provider.credential``,
``PooledCredential.credential``) instead of an environment variable.
"""

from __future__ import annotations

import base64
import binascii
import re

from streams.config_base import ConfigError, Strict

_DEK_ID = re.compile(r"^[0-9a-f]{32}$")
_CHECK = re.compile(r"^[0-9a-f]{16}$")
_MASTER_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class KeyVersion(Strict, kw_only=True, frozen=True):
    """A key-encryption key version.  Retired: no data key wrapped by it is
    opened any more (fail closed), by the Hub or by any node."""

    version: int
    master_key: str  # the id of the master key it is derived from
    check: str  # HMAC of a fixed label under the key (hex): proves a node derives the same key
    retired: bool = False


class SealedSecret(Strict, kw_only=True, frozen=True):
    dek: str  # the data key's id in the vault bucket (32 hex)
    nonce: str  # base64, 12 bytes
    ciphertext: str  # base64: the secret encrypted, the GCM tag appended


class CredentialSpec(Strict, kw_only=True, frozen=True):
    """A provider credential as admins describe it (the Hub's ``credential``
    aggregate).  The secret is never part of it.  ``provider`` and ``org``
    are bound into the ciphertext, so they are fixed once it exists."""

    id: str
    provider: str
    org: str = ""
    description: str = ""


class VaultCredential(Strict, kw_only=True, frozen=True):
    id: str
    provider: str  # bound into the ciphertext: it opens for this provider only
    org: str = ""  # bound too
    sealed: SealedSecret
    # The secret's keyed fingerprint (streams.vault.keyring.fingerprint_with,
    # under a key derived from the master key it was sealed with): a node
    # holding the master keys recognises the secret when it sees it (the
    # proxy classifies a provider key in bumped traffic as corporate)
    # without opening the credential.
    fingerprint: str = ""


class VaultSection(Strict, kw_only=True, frozen=True):
    keys: tuple[KeyVersion, ...] = ()
    credentials: tuple[VaultCredential, ...] = ()


def b64_bytes(value: str, where: str, *, size: int | None = None) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: not base64") from None
    if size is not None and len(raw) != size:
        raise ConfigError(f"{where}: must be {size} bytes")
    return raw


def validate_vault(vault: VaultSection, *, providers: set[str], orgs: set[str]) -> dict[str, str]:
    """Check the section; returns credential id -> its provider (what the
    providers' references are checked against)."""
    versions: set[int] = set()
    for i, k in enumerate(vault.keys):
        where = f"vault.keys[{i}]"
        if k.version < 1:
            raise ConfigError(f"{where}.version: must be 1 or more")
        if k.version in versions:
            raise ConfigError(f"{where}.version: duplicate key version {k.version}")
        versions.add(k.version)
        if not _MASTER_ID.match(k.master_key):
            raise ConfigError(f"{where}.master_key: not a master key id (letters, digits, . _ -)")
        if not _CHECK.match(k.check):
            raise ConfigError(f"{where}.check: must be 16 lowercase hex chars")
    owners: dict[str, str] = {}
    deks: set[str] = set()
    for i, c in enumerate(vault.credentials):
        where = f"vault.credentials[{i}]"
        # ids as everywhere (letters, digits, . _ : -), checked by the caller's check_id
        if c.id in owners:
            raise ConfigError(f"{where}.id: duplicate credential {c.id!r}")
        if c.provider not in providers:
            raise ConfigError(f"{where}.provider: unknown provider {c.provider!r}")
        if c.org and c.org not in orgs:
            raise ConfigError(f"{where}.org: unknown org {c.org!r}")
        if not _DEK_ID.match(c.sealed.dek):
            raise ConfigError(f"{where}.sealed.dek: must be 32 lowercase hex chars")
        if c.sealed.dek in deks:
            raise ConfigError(f"{where}.sealed.dek: shared with another credential")
        deks.add(c.sealed.dek)
        b64_bytes(c.sealed.nonce, f"{where}.sealed.nonce", size=12)
        if c.fingerprint and not _CHECK.match(c.fingerprint):
            raise ConfigError(f"{where}.fingerprint: must be 16 lowercase hex chars")
        if len(b64_bytes(c.sealed.ciphertext, f"{where}.sealed.ciphertext")) < 17:
            raise ConfigError(f"{where}.sealed.ciphertext: too short to hold a secret and its tag")
        owners[c.id] = c.provider
    return owners
