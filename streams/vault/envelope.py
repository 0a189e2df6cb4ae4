"""Envelope encryption of one credential's secret.

- The secret is encrypted with AES-256-GCM under a *data key* of its own
  (random, 256 bits), with a random 96-bit nonce; the associated data binds
  the credential id, its provider, its org and the data key's id, so a
  ciphertext copied onto another credential (or another provider) does not
  open.  This part (``SealedSecret``) is what CONFIG events and snapshots
  carry.
- The data key is encrypted ("wrapped") with AES-256-GCM under a
  key-encryption key version (``streams.vault.keyring``), with its own
  nonce and associated data binding the data key id, the credential, and
  the version.  This part (``WrappedKey``) lives in the vault bucket, where
  a rotation replaces it in place (``rewrap``): the CONFIG stream, kept
  forever, never holds a wrapped key, so retiring a version never breaks a
  replay, and a key deleted from the bucket leaves its ciphertext in the
  stream unreadable for good.

Plaintext exists only in the memory of whoever opens (a node building its
runtime, the Hub probing a credential); nothing here logs.
"""

from __future__ import annotations

import base64
import os
import secrets

import msgspec

from streams.config_vault import SealedSecret
from streams.vault.keyring import Keyring, VaultError

_SECRET_LABEL = "nexus-vault/secret/v1"  # noqa: S105 - an AAD label, not a secret
_DEK_LABEL = "nexus-vault/dek/v1"
MAX_SECRET_BYTES = 64 * 1024  # a service-account JSON fits; nothing larger is a credential


class Binding(msgspec.Struct, frozen=True):
    """Whose secret it is: what the ciphertexts are bound to."""

    credential: str
    provider: str
    org: str = ""


class WrappedKey(msgspec.Struct, kw_only=True, frozen=True):
    """A data key, wrapped: the value of its entry in the vault bucket."""

    v: int = 1
    credential: str
    provider: str
    org: str = ""
    kek: int  # the key-encryption key version that wraps it
    nonce: str  # base64, 12 bytes
    wrapped: str  # base64: the data key encrypted, the GCM tag appended
    created_at_ms: int = 0
    rewrapped_at_ms: int = 0

    @property
    def binding(self) -> Binding:
        return Binding(self.credential, self.provider, self.org)


def _aad(*parts: str | int) -> bytes:
    # A JSON array: unambiguous however the parts are spelt.
    return msgspec.json.encode(list(parts))


def secret_aad(binding: Binding, dek_id: str) -> bytes:
    return _aad(_SECRET_LABEL, binding.credential, binding.provider, binding.org, dek_id)


def dek_aad(binding: Binding, dek_id: str, kek_version: int) -> bytes:
    return _aad(_DEK_LABEL, dek_id, binding.credential, binding.provider, binding.org, kek_version)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


def new_dek_id() -> str:
    return secrets.token_hex(16)


def _wrap(dek: bytes, dek_id: str, binding: Binding, keyring: Keyring, now_ms: int) -> WrappedKey:
    version = keyring.current.version
    nonce = os.urandom(12)
    wrapped = keyring.kek(version).encrypt(nonce, dek, dek_aad(binding, dek_id, version))
    return WrappedKey(
        credential=binding.credential,
        provider=binding.provider,
        org=binding.org,
        kek=version,
        nonce=_b64(nonce),
        wrapped=_b64(wrapped),
        created_at_ms=now_ms,
    )


def seal(secret: str, binding: Binding, keyring: Keyring, *, now_ms: int) -> tuple[SealedSecret, WrappedKey]:
    """A new data key for ``secret``: the sealed secret (for events and
    snapshots) and the wrapped data key (for the vault bucket)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # imported when used

    data = secret.encode()
    if not data:
        raise VaultError(f"credential {binding.credential!r}: the secret is empty")
    if len(data) > MAX_SECRET_BYTES:
        raise VaultError(f"credential {binding.credential!r}: the secret is over {MAX_SECRET_BYTES} bytes")
    dek = AESGCM.generate_key(bit_length=256)
    dek_id = new_dek_id()
    nonce = os.urandom(12)
    ciphertext = AESGCM(dek).encrypt(nonce, data, secret_aad(binding, dek_id))
    try:
        wrapped = _wrap(dek, dek_id, binding, keyring, now_ms)
    except VaultError as exc:
        raise VaultError(f"credential {binding.credential!r}: cannot seal: {exc}") from None
    return SealedSecret(dek=dek_id, nonce=_b64(nonce), ciphertext=_b64(ciphertext)), wrapped


def unwrap(dek_id: str, wrapped: WrappedKey, binding: Binding, keyring: Keyring) -> bytes:
    """The data key; VaultError (naming the credential) when it may not or
    cannot be opened: a retired or unknown version, another master key, a
    wrapped key that belongs to another credential or was altered."""
    from cryptography.exceptions import InvalidTag  # imported when used: the gateway starts without it

    who = f"credential {binding.credential!r}"
    if wrapped.binding != binding:
        raise VaultError(f"{who}: its data key {dek_id} belongs to credential {wrapped.credential!r}")
    try:
        aead = keyring.kek(wrapped.kek)
    except VaultError as exc:
        raise VaultError(f"{who}: its data key cannot be opened: {exc}") from None
    try:
        return aead.decrypt(
            _unb64(wrapped.nonce), _unb64(wrapped.wrapped), dek_aad(binding, dek_id, wrapped.kek)
        )
    except (InvalidTag, ValueError):
        raise VaultError(
            f"{who}: its wrapped data key does not open (altered, or not this credential's)"
        ) from None


def open_secret(sealed: SealedSecret, wrapped: WrappedKey, binding: Binding, keyring: Keyring) -> str:
    """The plaintext secret (keep it in memory only)."""
    from cryptography.exceptions import InvalidTag  # imported when used: the gateway starts without it
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    dek = unwrap(sealed.dek, wrapped, binding, keyring)
    try:
        data = AESGCM(dek).decrypt(
            _unb64(sealed.nonce), _unb64(sealed.ciphertext), secret_aad(binding, sealed.dek)
        )
    except (InvalidTag, ValueError):
        raise VaultError(
            f"credential {binding.credential!r}: the sealed secret does not open "
            "(altered, or moved from another credential)"
        ) from None
    return data.decode()


def rewrap(dek_id: str, wrapped: WrappedKey, keyring: Keyring, *, now_ms: int) -> WrappedKey:
    """The same data key wrapped by the current version (the data key is in
    plain text only inside this call)."""
    binding = wrapped.binding
    dek = unwrap(dek_id, wrapped, binding, keyring)
    fresh = _wrap(dek, dek_id, binding, keyring, now_ms)
    return msgspec.structs.replace(fresh, created_at_ms=wrapped.created_at_ms, rewrapped_at_ms=now_ms)


def last4(secret: str) -> str:
    """The last four characters, shown for a secret long enough that they
    give nothing away (API keys are); empty for short ones."""
    return secret[-4:] if len(secret) >= 20 else ""
