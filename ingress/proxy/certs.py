"""The enterprise CA and the leaves the proxy shows bumped clients.

Leaves (mitmproxy's mechanism, our code): one ECDSA P-256 key per process
shared by every leaf (minting is then one signature, not a key
generation), a certificate per host signed by the CA with the host in its
SAN (an IP SAN for an IP target), valid from an hour ago (clients with a
slow clock) for at most 397 days, the CA's key id as authority key id and
the leaf's own subject key id.  Each host gets a server-side SSLContext,
kept in an LRU: building one costs a signature and a context, reusing one
costs a dict lookup.

The CA key comes from a file only its owner can read, or from the output
of a command (a KMS unwrap); it lives in this process's memory only.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import shutil
import ssl
import stat
import subprocess
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from streams import certificates
from streams.config_proxy import CaSource

log = logging.getLogger("nexus.proxy")

NOT_BEFORE_SLACK = dt.timedelta(hours=1)


class CaError(Exception):
    """The CA cannot be loaded: the message says which file and why."""


class Authority:
    """One CA: its certificate and (for the signing one) its private key."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None) -> None:
        self.cert = cert
        self.key = key
        self.pem = cert.public_bytes(serialization.Encoding.PEM)
        try:
            self.key_id = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        except x509.ExtensionNotFound:
            self.key_id = x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
        self.fingerprint = cert.fingerprint(hashes.SHA256()).hex()


def _read_key_file(path: str) -> bytes:
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise CaError(f"CA key {path}: cannot read: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CaError(f"CA key {path}: readable by others (mode {stat.S_IMODE(st.st_mode):o}); chmod 600 it")
    return p.read_bytes()


def _run_key_command(argv: tuple[str, ...]) -> bytes:
    try:
        done = subprocess.run(list(argv), capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CaError(f"CA key command {argv[0]!r} failed: {type(exc).__name__}") from None
    if done.returncode != 0:
        # stderr may name the key's location, never the key: keep a line.
        first = done.stderr.decode(errors="replace").strip().splitlines()[:1]
        raise CaError(f"CA key command {argv[0]!r} exited {done.returncode}: {' '.join(first)}")
    return done.stdout


def load_authority(source: CaSource, *, signing: bool) -> Authority:
    try:
        cert = x509.load_pem_x509_certificate(Path(source.cert_file).read_bytes())
    except OSError as exc:
        raise CaError(f"CA certificate {source.cert_file}: cannot read: {exc.strerror}") from None
    except ValueError:
        raise CaError(f"CA certificate {source.cert_file}: not a PEM certificate") from None
    key: ec.EllipticCurvePrivateKey | None = None
    if signing:
        raw = _read_key_file(source.key_file) if source.key_file else _run_key_command(source.key_command)
        try:
            loaded = serialization.load_pem_private_key(raw, password=None)
        except (ValueError, TypeError):
            raise CaError("CA key: not an unencrypted PEM private key") from None
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise CaError("CA key: an ECDSA key is expected (nexus up and nexus proxy ca make one)")
        pub = loaded.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        cert_pub = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if pub != cert_pub:
            raise CaError(f"CA key does not belong to the certificate {source.cert_file}")
        key = loaded
    return Authority(cert, key)


def generate_ca(cert_path: Path, key_path: Path, *, name: str = "Nexus development CA") -> None:
    """A new CA (ECDSA P-256, 10 years): the key written 0600 first, then
    the certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certificates.self_signed_ca(
        key,
        certificates.name(name, organization="Nexus"),
        now=dt.datetime.now(dt.UTC),
        not_before_slack=NOT_BEFORE_SLACK,
        days=3650,
        digital_signature=True,
    )
    certificates.write_private_key(key_path, key, replace=True)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _san_for(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return x509.DNSName(host)


class LeafMinter:
    """Leaves and per-host server contexts for one signing CA."""

    def __init__(
        self,
        authority: Authority,
        *,
        days: int = 30,
        cache_size: int = 1024,
        alpn: tuple[str, ...] = ("http/1.1",),
        on_cache: Callable[[bool], None] | None = None,
    ) -> None:
        if authority.key is None:
            raise CaError("the signing CA has no key")
        self.authority = authority
        self._ca_key = authority.key
        self._days = days
        self._size = cache_size
        self._alpn = list(alpn)
        self._on_cache = on_cache
        self._lock = threading.Lock()
        self._contexts: OrderedDict[str, ssl.SSLContext] = OrderedDict()
        # The shared leaf key, written once to a private directory: Python's
        # ssl loads keys and chains from files only.
        self._dir = tempfile.mkdtemp(prefix="nexus-proxy-leaves-")
        os.chmod(self._dir, 0o700)
        self.leaf_key = ec.generate_private_key(ec.SECP256R1())
        self._key_path = os.path.join(self._dir, "leaf-key.pem")
        certificates.write_private_key(self._key_path, self.leaf_key, replace=True)
        self._leaf_ski = x509.SubjectKeyIdentifier.from_public_key(self.leaf_key.public_key())
        self._serial = 0

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def mint(self, host: str, now: dt.datetime | None = None) -> x509.Certificate:
        now = now or dt.datetime.now(dt.UTC)
        ca = self.authority.cert
        cn = host if len(host) <= 64 else host[:64]
        return (
            certificates.leaf(
                subject=certificates.name(cn),
                issuer=ca.subject,
                public_key=self.leaf_key.public_key(),
                now=now,
                not_before_slack=NOT_BEFORE_SLACK,
                days=self._days,
                authority_key_id=self.authority.key_id,
                subject_key_id=self._leaf_ski,
                extended_usage=ExtendedKeyUsageOID.SERVER_AUTH,
            )
            .add_extension(x509.SubjectAlternativeName([_san_for(host)]), critical=False)
            .sign(self._ca_key, hashes.SHA256())
        )

    def context(self, host: str) -> ssl.SSLContext:
        """The server-side context presenting ``host``'s leaf."""
        host = host.lower()
        with self._lock:
            ctx = self._contexts.get(host)
            if ctx is not None:
                self._contexts.move_to_end(host)
        if self._on_cache is not None:
            self._on_cache(ctx is not None)
        if ctx is not None:
            return ctx
        ctx = self._build(host)
        with self._lock:
            self._contexts[host] = ctx
            while len(self._contexts) > self._size:
                self._contexts.popitem(last=False)
        return ctx

    def _build(self, host: str) -> ssl.SSLContext:
        leaf = self.mint(host)
        chain = leaf.public_bytes(serialization.Encoding.PEM) + self.authority.pem
        with self._lock:
            self._serial += 1
            path = os.path.join(self._dir, f"chain-{self._serial}.pem")
        with open(path, "wb") as f:
            f.write(chain)
        try:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(path, self._key_path)
        finally:
            os.unlink(path)
        # A client offering h2 and http/1.1 gets http/1.1 (what we parse);
        # one offering only h2 gets no ALPN answer and speaks 1.1 or leaves.
        ctx.set_alpn_protocols(self._alpn)
        ctx.sni_callback = lambda sslobj, name, _ctx: self._sni(sslobj, name, host)
        return ctx

    def _sni(self, sslobj: ssl.SSLObject, server_name: str | None, host: str) -> None:
        # The client names another host than its CONNECT did: show that one
        # (the SAN must match what the client checks).
        if server_name and server_name.lower() != host:
            sslobj.context = self.context(server_name)

    def cached(self) -> int:
        with self._lock:
            return len(self._contexts)
