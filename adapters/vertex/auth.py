"""Service-account OAuth2 for Vertex (RFC 7523 JWT bearer grant).

Pure pieces only: parse the service-account JSON, build and RS256-sign the
assertion, build the token request, read the token response, and cache
tokens per service account until shortly before they expire.  Sending the
request is I/O and lives in ingress.
"""

from __future__ import annotations

import base64
import threading
import urllib.parse
from typing import TYPE_CHECKING

import msgspec

from adapters.base import CodecError, WireRequest
from adapters.wirekit.errors import make

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

# cryptography (~6 MB resident) is imported when a Vertex key is first used.

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME_S = 3600
# Refresh this long before expiry so a token never dies mid-request.
REFRESH_MARGIN_S = 300


class ServiceAccount(msgspec.Struct, frozen=True, kw_only=True):
    client_email: str
    private_key: str
    private_key_id: str | None = None
    token_uri: str = DEFAULT_TOKEN_URI
    project_id: str | None = None
    type: str = "service_account"


class AccessToken(msgspec.Struct, frozen=True):
    token: str
    expires_at: float  # unix seconds


class _TokenResponse(msgspec.Struct):
    access_token: str
    expires_in: int = 3600
    token_type: str = "Bearer"  # noqa: S105 - a scheme name


def _auth_error(message: str) -> CodecError:
    return CodecError(make("auth_failed", f"vertex: {message}"))


def parse_service_account(raw: bytes | str) -> ServiceAccount:
    try:
        sa = msgspec.json.decode(raw, type=ServiceAccount)
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        # The message names the missing field only; never the key material.
        raise _auth_error(f"service account JSON is invalid ({e})") from None
    if sa.type != "service_account":
        raise _auth_error(f"credential type {sa.type!r} is not a service account")
    # The assertion is posted to token_uri: only https, so a tampered
    # credential cannot send it in the clear (ingress also applies the SSRF
    # guard to this URL).
    if not sa.token_uri.startswith("https://"):
        raise _auth_error("service account token_uri must be https")
    return sa


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _private_key(pem: str) -> rsa.RSAPrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise _auth_error("service account private_key is not a PEM RSA key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise _auth_error("service account private_key is not an RSA key")
    return key


def build_assertion(sa: ServiceAccount, now: int, scope: str = SCOPE) -> str:
    """The signed JWT (RS256) exchanged for an access token."""
    header: dict[str, str] = {"alg": "RS256", "typ": "JWT"}
    if sa.private_key_id:
        header["kid"] = sa.private_key_id
    claims = {
        "iss": sa.client_email,
        "scope": scope,
        "aud": sa.token_uri,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME_S,
    }
    signing_input = _b64url(msgspec.json.encode(header)) + "." + _b64url(msgspec.json.encode(claims))
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    signature = _private_key(sa.private_key).sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + _b64url(signature)


def token_request(sa: ServiceAccount, now: int, scope: str = SCOPE) -> WireRequest:
    form = urllib.parse.urlencode({"grant_type": GRANT_TYPE, "assertion": build_assertion(sa, now, scope)})
    return WireRequest(
        url=sa.token_uri,
        headers={"content-type": "application/x-www-form-urlencoded"},
        body=form.encode(),
    )


def parse_token_response(body: bytes, now: float) -> AccessToken:
    try:
        parsed = msgspec.json.decode(body, type=_TokenResponse)
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise _auth_error("token endpoint answered without an access_token") from None
    return AccessToken(token=parsed.access_token, expires_at=now + parsed.expires_in)


class TokenCache:
    """Access tokens keyed by service account (email + key id).  Thread-safe;
    a token is handed out only while more than REFRESH_MARGIN_S remain."""

    def __init__(self, margin_s: float = REFRESH_MARGIN_S) -> None:
        self._margin = margin_s
        self._tokens: dict[tuple[str, str], AccessToken] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(sa: ServiceAccount) -> tuple[str, str]:
        return sa.client_email, sa.private_key_id or ""

    def get(self, sa: ServiceAccount, now: float) -> str | None:
        with self._lock:
            tok = self._tokens.get(self.key(sa))
            if tok is None or tok.expires_at - self._margin <= now:
                return None
            return tok.token

    def put(self, sa: ServiceAccount, token: AccessToken) -> None:
        with self._lock:
            self._tokens[self.key(sa)] = token

    def invalidate(self, sa: ServiceAccount) -> None:
        """After a 401 from Vertex: the token was revoked early."""
        with self._lock:
            self._tokens.pop(self.key(sa), None)


def public_key_pem(sa: ServiceAccount) -> bytes:
    """For tests and diagnostics: the public half of the account's key."""
    from cryptography.hazmat.primitives import serialization

    return (
        _private_key(sa.private_key)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
