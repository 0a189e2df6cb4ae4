"""Envelope encryption: a secret opens with its own data key, under its own
binding, through a key version in service, and in no other case; each
refusal says which credential and why, and never quotes a secret."""

from __future__ import annotations

import base64

import msgspec
import pytest

from streams.config_vault import KeyVersion
from streams.vault.envelope import Binding, open_secret, rewrap, seal, unwrap
from streams.vault.keyring import Keyring, VaultError, check_value, derive_kek, new_version
from streams.vault.master import MasterKeys, new_master_key, parse_master_keys

SECRET = "sk-test-7f3a9c1e5b2d4086a1c3e5f7091b3d5f"
B = Binding("openai-prod", "openai", "acme")


def master(*ids: str) -> MasterKeys:
    return parse_master_keys("\n".join(f"{i}:{new_master_key()}" for i in ids), "test")


def ring(m: MasterKeys, *versions: KeyVersion) -> Keyring:
    return Keyring(m, versions)


def test_a_sealed_secret_opens_and_its_parts_hold_no_plaintext() -> None:
    m = master("k1")
    kr = ring(m, new_version(m, ()))
    sealed, wrapped = seal(SECRET, B, kr, now_ms=1)
    assert open_secret(sealed, wrapped, B, kr) == SECRET
    blob = msgspec.json.encode(sealed) + msgspec.json.encode(wrapped)
    assert SECRET.encode() not in blob and SECRET[4:20].encode() not in blob
    assert wrapped.kek == 1 and len(sealed.dek) == 32
    # A fresh data key and nonce each time: sealing twice gives different bytes.
    again, _ = seal(SECRET, B, kr, now_ms=1)
    assert again.ciphertext != sealed.ciphertext and again.dek != sealed.dek


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(Binding("openai-dev", "openai", "acme"), id="another-credential"),
        pytest.param(Binding("openai-prod", "azure", "acme"), id="another-provider"),
        pytest.param(Binding("openai-prod", "openai", "globex"), id="another-org"),
    ],
)
def test_a_ciphertext_moved_to_another_credential_fails_to_open(other: Binding) -> None:
    m = master("k1")
    kr = ring(m, new_version(m, ()))
    sealed, wrapped = seal(SECRET, B, kr, now_ms=1)
    # The sealed secret presented as another credential's, with its own
    # wrapped key relabelled too: the associated data no longer matches.
    relabelled = msgspec.structs.replace(
        wrapped, credential=other.credential, provider=other.provider, org=other.org
    )
    with pytest.raises(VaultError, match=repr(other.credential)) as exc:
        open_secret(sealed, relabelled, other, kr)
    assert SECRET not in str(exc.value)
    # And the other credential's own data key cannot open this ciphertext.
    _, theirs = seal("sk-other-secret-value-000000000000", other, kr, now_ms=1)
    with pytest.raises(VaultError, match="does not open"):
        open_secret(msgspec.structs.replace(sealed, dek=sealed.dek), theirs, other, kr)


def test_swapping_ciphertexts_between_two_credentials_fails() -> None:
    m = master("k1")
    kr = ring(m, new_version(m, ()))
    a, wa = seal(SECRET, B, kr, now_ms=1)
    b_binding = Binding("openai-dev", "openai", "acme")
    b, wb = seal("sk-dev-000000000000000000000000000", b_binding, kr, now_ms=1)
    # b's record now carries a's ciphertext (and a's data key id).
    with pytest.raises(VaultError):
        open_secret(a, wa, b_binding, kr)
    with pytest.raises(VaultError):
        open_secret(msgspec.structs.replace(b, ciphertext=a.ciphertext, nonce=a.nonce), wb, b_binding, kr)


def test_an_altered_ciphertext_or_wrapped_key_fails() -> None:
    m = master("k1")
    kr = ring(m, new_version(m, ()))
    sealed, wrapped = seal(SECRET, B, kr, now_ms=1)
    raw = bytearray(base64.b64decode(sealed.ciphertext))
    raw[0] ^= 1
    bad = msgspec.structs.replace(sealed, ciphertext=base64.b64encode(bytes(raw)).decode())
    with pytest.raises(VaultError, match="sealed secret does not open"):
        open_secret(bad, wrapped, B, kr)
    raw = bytearray(base64.b64decode(wrapped.wrapped))
    raw[-1] ^= 1
    with pytest.raises(VaultError, match="wrapped data key does not open"):
        open_secret(
            sealed, msgspec.structs.replace(wrapped, wrapped=base64.b64encode(bytes(raw)).decode()), B, kr
        )
    # Claiming another key version does not help either.
    v2 = new_version(m, kr.versions.values())
    with pytest.raises(VaultError):
        open_secret(sealed, msgspec.structs.replace(wrapped, kek=2), B, ring(m, *kr.versions.values(), v2))


def test_rotation_rewraps_the_same_data_key_and_retirement_fails_closed() -> None:
    m = master("k1")
    v1 = new_version(m, ())
    sealed, old = seal(SECRET, B, ring(m, v1), now_ms=1)
    v2 = new_version(m, (v1,))
    both = ring(m, v1, v2)
    assert both.current.version == 2
    new = rewrap(sealed.dek, old, both, now_ms=2)
    assert new.kek == 2 and new.wrapped != old.wrapped and new.rewrapped_at_ms == 2
    assert unwrap(sealed.dek, new, B, both) == unwrap(sealed.dek, old, B, both)
    retired = ring(m, msgspec.structs.replace(v1, retired=True), v2)
    assert open_secret(sealed, new, B, retired) == SECRET
    with pytest.raises(VaultError) as exc:
        open_secret(sealed, old, B, retired)
    assert str(exc.value) == (
        "credential 'openai-prod': its data key cannot be opened: key version 1 is retired"
    )


def test_a_master_key_rotation_derives_new_versions_from_the_new_key() -> None:
    m1 = master("k1")
    v1 = new_version(m1, ())
    sealed, old = seal(SECRET, B, ring(m1, v1), now_ms=1)
    # The operator adds k2 to the source (k1 stays until v1 is retired).
    m2 = MasterKeys((*m1.keys, ("k2", base64.b64decode(new_master_key()))), "test")
    v2 = new_version(m2, (v1,))
    assert v2.master_key == "k2"
    new = rewrap(sealed.dek, old, ring(m2, v1, v2), now_ms=2)
    # After retiring v1, k1 can leave the source: only k2 is needed.
    only_k2 = MasterKeys((("k2", m2.get("k2") or b""),), "test")
    assert open_secret(sealed, new, B, ring(only_k2, msgspec.structs.replace(v1, retired=True), v2)) == SECRET
    with pytest.raises(VaultError, match="master key 'k1', which test does not hold"):
        open_secret(sealed, old, B, ring(only_k2, v1, v2))


def test_another_master_key_is_named_not_tried() -> None:
    m = master("k1")
    v1 = new_version(m, ())
    sealed, wrapped = seal(SECRET, B, ring(m, v1), now_ms=1)
    impostor = master("k1")  # same id, other bytes
    with pytest.raises(VaultError, match="check value differs"):
        open_secret(sealed, wrapped, B, ring(impostor, v1))
    with pytest.raises(VaultError, match="no vault master key"):
        open_secret(sealed, wrapped, B, Keyring(None, (v1,)))
    with pytest.raises(VaultError, match="key version 1 is unknown"):
        open_secret(sealed, wrapped, B, Keyring(m, ()))


def test_check_values_and_derivation_are_per_version() -> None:
    key = base64.b64decode(new_master_key())
    assert derive_kek(key, 1) != derive_kek(key, 2)
    assert check_value(derive_kek(key, 1)) != check_value(derive_kek(key, 2))
    assert len(check_value(derive_kek(key, 1))) == 16


def test_no_version_in_service_refuses_to_seal() -> None:
    m = master("k1")
    v1 = msgspec.structs.replace(new_version(m, ()), retired=True)
    with pytest.raises(VaultError, match="no key version in service"):
        seal(SECRET, B, ring(m, v1), now_ms=1)
    with pytest.raises(VaultError, match="empty"):
        seal("", B, ring(m, new_version(m, ())), now_ms=1)


def test_fingerprints_are_keyed_by_the_master_key() -> None:
    m = master("k1")
    kr = ring(m, new_version(m, ()))
    assert kr.fingerprint(SECRET) == kr.fingerprint(SECRET)
    assert kr.fingerprint(SECRET) != kr.fingerprint(SECRET + "x")
    other = master("k1")
    assert ring(other, new_version(other, ())).fingerprint(SECRET) != kr.fingerprint(SECRET)
    assert "k1" in repr(kr) and repr(m).count("b'") == 0
