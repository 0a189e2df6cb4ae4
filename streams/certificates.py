"""X.509 building blocks of the two certificate authorities: the Hub's
agent CA (``hub/agents/ca.py``) and the proxy's interception CA
(``ingress/proxy/certs.py``).

Both make an ECDSA CA certificate, sign short-lived leaves carrying the
CA's key id, and write a private key only its owner may read; what differs
(names, lifetimes, key usages, whether a key file may be replaced) stays
with each caller.  It lives in ``streams``, the one layer both the Hub and
the ingress may import (docs/architecture.md).  Only those two import it,
so ``cryptography`` is loaded here at module level: neither can run
without it, and the gateway's hot path never imports this module.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID


def name(common_name: str, *, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def key_usage(*, digital_signature: bool, signs_certificates: bool = False) -> x509.KeyUsage:
    """A KeyUsage with only signing bits: a CA signs certificates and CRLs,
    a leaf signs handshakes or headers; neither encrypts."""
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def self_signed_ca(
    key: ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    *,
    now: dt.datetime,
    not_before_slack: dt.timedelta,
    days: int,
    digital_signature: bool,
) -> x509.Certificate:
    """A CA certificate that signs leaves only (path length 0)."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - not_before_slack)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(digital_signature=digital_signature, signs_certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def leaf(
    *,
    subject: x509.Name,
    issuer: x509.Name,
    public_key: CertificatePublicKeyTypes,
    now: dt.datetime,
    not_before_slack: dt.timedelta,
    days: int,
    authority_key_id: bytes,
    subject_key_id: x509.SubjectKeyIdentifier,
    extended_usage: x509.ObjectIdentifier | None,
) -> x509.CertificateBuilder:
    """An end-entity certificate's builder, for the caller to add what is
    its own (a SAN) and sign: digital signature only, with the extended
    usage given (none for a key that signs no TLS handshake), and the key
    ids that let a client find the issuer."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - not_before_slack)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(digital_signature=True), critical=True)
    )
    if extended_usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([extended_usage]), critical=False)
    return builder.add_extension(
        x509.AuthorityKeyIdentifier(authority_key_id, None, None), critical=False
    ).add_extension(subject_key_id, critical=False)


def write_private_key(path: Path | str, key: ec.EllipticCurvePrivateKey, *, replace: bool) -> None:
    """The key as unencrypted PKCS#8 PEM, mode 0600 from its creation.
    Without ``replace`` an existing file (or a symlink) is an error: a CA
    key is never overwritten by a new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if replace else os.O_EXCL | os.O_NOFOLLOW)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
