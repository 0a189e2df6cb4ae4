"""A real SMTP server for the e-mail channel: aiosmtpd with STARTTLS
(a self-signed certificate for 127.0.0.1 made here), AUTH required over
TLS, messages kept as parsed e-mails."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import socket
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "smtp.crt", directory / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@dataclass
class SmtpReceiver:
    directory: Path
    username: str = "nexus"
    password: str = "smtp-pass-word"
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str], bool]] = field(default_factory=list)  # from, to, over TLS
    auth_failures: int = 0
    # starttls: STARTTLS offered and required; implicit: TLS from the first
    # byte (port 465 style); plain: no TLS at all (and no AUTH).
    mode: str = "starttls"
    port: int = 0
    ca_file: Path | None = None
    _controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append(msg)
        over_tls = session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos), over_tls))
        return "250 OK"

    def _auth(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            self.username.encode(),
            self.password.encode(),
        )
        if not ok:
            self.auth_failures += 1
        return AuthResult(success=ok, handled=False)

    def start(self) -> SmtpReceiver:
        cert, key = self_signed(self.directory)
        self.ca_file = cert
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(cert, key)
        self.port = free_port()
        kwargs: dict[str, Any] = {}
        if self.mode == "starttls":
            kwargs = {"tls_context": tls, "require_starttls": True, "auth_required": True}
        elif self.mode == "implicit":
            kwargs = {"ssl_context": tls, "auth_required": True}
        self._controller = Controller(
            self,
            hostname="127.0.0.1",
            port=self.port,
            # Implicit TLS: the session is TLS from the start (aiosmtpd only
            # counts STARTTLS as TLS for AUTH).
            auth_require_tls=self.mode == "starttls",
            authenticator=self._auth,
            **kwargs,
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
