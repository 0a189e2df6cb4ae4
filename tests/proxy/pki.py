"""A test PKI for the fake upstreams: a CA of its own (not the proxy's) and
server certificates for any host, as real files and SSL contexts."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ingress.proxy.certs import generate_ca


class Pki:
    def __init__(self, folder: Path, name: str = "Upstream test CA") -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.ca_path = folder / "ca.pem"
        self.ca_key_path = folder / "ca-key.pem"
        generate_ca(self.ca_path, self.ca_key_path, name=name)
        self.ca = x509.load_pem_x509_certificate(self.ca_path.read_bytes())
        key = serialization.load_pem_private_key(self.ca_key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        self.ca_key = key
        self._n = 0

    def server_context(
        self, hosts: list[str], *, expired: bool = False, alpn: tuple[str, ...] = ("http/1.1",)
    ) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        start, end = (
            (now - dt.timedelta(days=30), now - dt.timedelta(days=1))
            if expired
            else (
                now - dt.timedelta(hours=1),
                now + dt.timedelta(days=30),
            )
        )
        names: list[x509.GeneralName] = []
        for h in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                names.append(x509.DNSName(h))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(self.ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        self._n += 1
        chain = self.folder / f"server-{self._n}.pem"
        keyfile = self.folder / f"server-{self._n}-key.pem"
        chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        keyfile.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(chain, keyfile)
        ctx.set_alpn_protocols(list(alpn))
        return ctx
