"""The agent CA's files and what it refuses to sign (no services)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from hub.agents.ca import AgentCA, CaError, CsrError, generate
from tests.hub.device import Device


def _csr(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "d")]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )


def test_generated_once_0600_and_checked_when_loaded(tmp_path: Path) -> None:
    ca = AgentCA.in_dir(tmp_path / "ca")
    key = tmp_path / "ca" / "agent-ca.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    again = AgentCA.in_dir(tmp_path / "ca")  # the same CA, not a new one
    assert again.pem == ca.pem and "PRIVATE" not in repr(again)
    os.chmod(key, 0o644)
    with pytest.raises(CaError, match="readable by others"):
        AgentCA.in_dir(tmp_path / "ca")
    os.chmod(key, 0o600)
    generate(tmp_path / "other.pem", tmp_path / "other.key")
    with pytest.raises(CaError, match="does not match"):
        AgentCA.load(tmp_path / "other.pem", key)
    with pytest.raises(FileExistsError):
        generate(tmp_path / "x.pem", key)  # never overwrites a key


def test_what_it_refuses_to_sign(tmp_path: Path) -> None:
    ca = AgentCA.in_dir(tmp_path)
    device = Device()
    with pytest.raises(CsrError, match="csr: the key must be"):
        ca.sign_mtls(_csr(rsa.generate_private_key(public_exponent=65537, key_size=2048)), "ag-1")
    with pytest.raises(CsrError, match="attestation_csr: the key must be Ed25519"):
        ca.sign_attestation(device.csr(), "ag-1")
    with pytest.raises(CsrError, match="not a PEM"):
        ca.sign_mtls("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "ag-1")
    issued = ca.sign_mtls(_csr(ec.generate_private_key(ec.SECP384R1())), "ag-2")
    assert issued.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "ag-2"
