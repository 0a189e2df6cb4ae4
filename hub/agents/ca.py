"""The agent CA: the authority that signs each enrolled device's mTLS
client certificate and its Ed25519 attestation key.

An ECDSA P-256 key and a self-signed certificate (10 years).  The key comes
from a file only its owner may read (``0600``, owned by the Hub's user, not
a symlink); ``nexus hub run`` / ``nexus up`` generate one into the data
directory on the first start when none is configured.  It lives in this
process's memory only and is never logged.

What it signs, from a device's certificate signing requests (each checked
for a valid self-signature: proof the device holds the key):

- the mTLS client certificate: the device's own key (ECDSA P-256/P-384 or
  Ed25519), subject CN = the agent id, ClientAuth only, 90 days;
- the attestation certificate: an Ed25519 key, CN = the agent id, no
  extended key usage (it signs attestation headers, not TLS), 90 days.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID

from streams import certificates

CA_DAYS = 3650
LEAF_DAYS = 90
NOT_BEFORE_SLACK = dt.timedelta(minutes=5)
MAX_CSR_BYTES = 16 * 1024


class CaError(Exception):
    """The CA cannot be loaded (the message names the file and why)."""


class CsrError(ValueError):
    """A signing request that is refused (the message says why)."""


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    pem: str
    serial: str  # hex
    not_after: dt.datetime


def _read_private(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise CaError(f"agent CA key {path}: cannot open: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CaError(f"agent CA key {path}: not a regular file")
        if st.st_mode & 0o077:
            raise CaError(
                f"agent CA key {path}: readable by others (mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it"
            )
        if st.st_uid != os.getuid():
            raise CaError(f"agent CA key {path}: owned by another user")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(64 * 1024)
    finally:
        os.close(fd)


def generate(cert_path: Path, key_path: Path, *, name: str = "Nexus agent CA") -> None:
    """A new CA key (written 0600, never replacing one) and certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certificates.self_signed_ca(
        key,
        certificates.name(name),
        now=dt.datetime.now(dt.UTC),
        not_before_slack=NOT_BEFORE_SLACK,
        days=CA_DAYS,
        digital_signature=False,
    )
    certificates.write_private_key(key_path, key, replace=False)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


class AgentCA:
    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1):
            raise CaError("the agent CA key must be ECDSA P-256 or P-384")
        self.cert = cert
        self._key = key
        self.pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        self._ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())

    def __repr__(self) -> str:
        return f"AgentCA(subject={self.cert.subject.rfc4514_string()!r})"

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> AgentCA:
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise CaError(f"agent CA certificate {cert_path}: {exc}") from None
        try:
            key = serialization.load_pem_private_key(_read_private(key_path), password=None)
        except ValueError:
            raise CaError(f"agent CA key {key_path}: not a PEM private key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CaError(f"agent CA key {key_path}: not an ECDSA key")
        if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
            raise CaError(f"agent CA key {key_path} does not match the certificate {cert_path}")
        return cls(cert, key)

    @classmethod
    def in_dir(cls, directory: Path) -> AgentCA:
        """The CA in ``directory`` (``agent-ca.pem``, ``agent-ca.key``),
        generated on the first call."""
        cert_path, key_path = directory / "agent-ca.pem", directory / "agent-ca.key"
        if not key_path.exists():
            generate(cert_path, key_path)
        return cls.load(cert_path, key_path)

    # --- signing -------------------------------------------------------------------

    def _builder(
        self,
        csr: x509.CertificateSigningRequest,
        agent_id: str,
        now: dt.datetime,
        extended_usage: x509.ObjectIdentifier | None,
    ) -> x509.CertificateBuilder:
        return certificates.leaf(
            subject=certificates.name(agent_id),
            issuer=self.cert.subject,
            public_key=csr.public_key(),
            now=now,
            not_before_slack=NOT_BEFORE_SLACK,
            days=LEAF_DAYS,
            authority_key_id=self._ski.digest,
            subject_key_id=x509.SubjectKeyIdentifier.from_public_key(csr.public_key()),
            extended_usage=extended_usage,
        )

    def _issued(self, builder: x509.CertificateBuilder) -> Issued:
        cert = builder.sign(self._key, hashes.SHA256())
        return Issued(
            cert,
            cert.public_bytes(serialization.Encoding.PEM).decode(),
            format(cert.serial_number, "x"),
            cert.not_valid_after_utc,
        )

    def sign_mtls(self, csr_pem: str, agent_id: str, *, now: dt.datetime | None = None) -> Issued:
        csr = parse_csr(csr_pem, "csr")
        key = csr.public_key()
        if isinstance(key, ec.EllipticCurvePublicKey):
            if not isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1):
                raise CsrError("csr: the key must be ECDSA P-256 or P-384, or Ed25519")
        elif not isinstance(key, ed25519.Ed25519PublicKey):
            raise CsrError("csr: the key must be ECDSA P-256 or P-384, or Ed25519")
        builder = self._builder(
            csr, agent_id, now or dt.datetime.now(dt.UTC), ExtendedKeyUsageOID.CLIENT_AUTH
        )
        return self._issued(builder)

    def sign_attestation(
        self, csr_pem: str, agent_id: str, *, now: dt.datetime | None = None
    ) -> tuple[Issued, bytes]:
        """The attestation certificate and the raw Ed25519 public key."""
        csr = parse_csr(csr_pem, "attestation_csr")
        key = csr.public_key()
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise CsrError("attestation_csr: the key must be Ed25519")
        # no extended usage: this key signs attestation headers, not TLS
        builder = self._builder(csr, agent_id, now or dt.datetime.now(dt.UTC), None)
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return self._issued(builder), raw


def parse_csr(pem: str, field: str) -> x509.CertificateSigningRequest:
    if len(pem) > MAX_CSR_BYTES:
        raise CsrError(f"{field}: larger than {MAX_CSR_BYTES} bytes")
    try:
        csr = x509.load_pem_x509_csr(pem.encode())
    except ValueError:
        raise CsrError(f"{field}: not a PEM certificate signing request") from None
    try:
        valid = csr.is_signature_valid
    except (InvalidSignature, ValueError):
        valid = False
    if not valid:
        raise CsrError(f"{field}: its signature does not verify (the request must be signed by its key)")
    return csr
