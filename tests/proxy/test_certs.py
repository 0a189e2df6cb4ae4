"""Leaves and CAs: what a client checks in the certificate we mint."""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from ingress.proxy.certs import CaError, LeafMinter, generate_ca, load_authority
from streams.config_proxy import CaSource


@pytest.fixture
def ca(tmp_path: Path) -> CaSource:
    generate_ca(tmp_path / "ca.pem", tmp_path / "ca-key.pem")
    return CaSource(cert_file=str(tmp_path / "ca.pem"), key_file=str(tmp_path / "ca-key.pem"))


def test_a_leaf_is_short_lived_p256_with_the_host_and_the_cas_key_id(ca: CaSource) -> None:
    authority = load_authority(ca, signing=True)
    minter = LeafMinter(authority, days=30)
    try:
        now = dt.datetime.now(dt.UTC)
        leaf = minter.mint("api.openai.com", now)
        ip_leaf = minter.mint("203.0.113.9", now)
    finally:
        minter.close()
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    assert leaf.public_key().curve.name == "secp256r1"
    assert now - dt.timedelta(hours=2) < leaf.not_valid_before_utc < now
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= dt.timedelta(days=397)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["api.openai.com"]
    ip_san = ip_leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(i) for i in ip_san.get_values_for_type(x509.IPAddress)] == ["203.0.113.9"]
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == authority.key_id
    assert ski.digest != authority.key_id
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_contexts_are_cached_per_host(ca: CaSource) -> None:
    seen: list[bool] = []
    minter = LeafMinter(load_authority(ca, signing=True), cache_size=2, on_cache=seen.append)
    try:
        a = minter.context("a.example")
        assert minter.context("a.example") is a
        minter.context("b.example")
        minter.context("c.example")  # evicts a
        assert minter.context("a.example") is not a
    finally:
        minter.close()
    assert seen == [False, True, False, False, False]


def test_a_key_readable_by_others_is_refused(ca: CaSource) -> None:
    os.chmod(ca.key_file, 0o644)
    with pytest.raises(CaError, match="chmod 600"):
        load_authority(ca, signing=True)


def test_the_key_can_come_from_a_command(ca: CaSource) -> None:
    cmd = CaSource(
        cert_file=ca.cert_file, key_command=(sys.executable, "-c", f"print(open({ca.key_file!r}).read())")
    )
    assert load_authority(cmd, signing=True).key is not None
    failing = CaSource(cert_file=ca.cert_file, key_command=(sys.executable, "-c", "raise SystemExit(3)"))
    with pytest.raises(CaError, match="exited 3"):
        load_authority(failing, signing=True)


def test_a_key_of_another_ca_is_refused(ca: CaSource, tmp_path: Path) -> None:
    generate_ca(tmp_path / "other.pem", tmp_path / "other-key.pem")
    mixed = CaSource(cert_file=ca.cert_file, key_file=str(tmp_path / "other-key.pem"))
    with pytest.raises(CaError, match="does not belong"):
        load_authority(mixed, signing=True)
