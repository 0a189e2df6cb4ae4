"""A device as the agent is one, for the enrolment tests: its mTLS key and
its Ed25519 attestation key, and their certificate signing requests."""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID


def _csr(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey, cn: str) -> str:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    )
    algo = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algo).public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class Device:
    tls_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    attestation_key: ed25519.Ed25519PrivateKey = field(default_factory=ed25519.Ed25519PrivateKey.generate)

    def csr(self) -> str:
        return _csr(self.tls_key, "device")

    def attestation_csr(self) -> str:
        return _csr(self.attestation_key, "device-attestation")

    def enrol_body(self, token: str, name: str = "laptop-1") -> dict[str, str]:
        return {
            "token": token,
            "name": name,
            "physical_id": "hw-0123",
            "csr": self.csr(),
            "attestation_csr": self.attestation_csr(),
        }
