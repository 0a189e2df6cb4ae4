"""Google's OAuth2 token endpoint for service accounts (RFC 7523 JWT bearer
grant, https://developers.google.com/identity/protocols/oauth2/service-account#httprest),
at /vertex/token: the form-encoded ``grant_type`` and ``assertion``; the
assertion must be an RS256 JWT signed by the configured service account's
key, addressed to this endpoint (``aud``), asking for the cloud-platform
scope, and not expired.  Answers ``{access_token, expires_in, token_type}``;
the token is then accepted as a bearer credential by the Vertex routes.
Errors are ``{"error": ..., "error_description": ...}`` (HTTP 400)."""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from typing import Any

import msgspec
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from nexus.sim.state import SIM_STATE

_encoder = msgspec.json.Encoder()
GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"


def _error(code: str, description: str, status: int = 400) -> web.Response:
    body = {"error": code, "error_description": description}
    return web.Response(status=status, body=_encoder.encode(body), content_type="application/json")


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _claims(assertion: str, public_pem: str, audience: str) -> dict[str, Any] | str:
    """The JWT's claims, or why it is refused."""
    try:
        head, body, sig = assertion.split(".")
        header = json.loads(_b64(head))
        claims = json.loads(_b64(body))
        signature = _b64(sig)
    except (ValueError, binascii.Error):
        return "the assertion is not a JWT"
    if header.get("alg") != "RS256":
        return "the assertion must be signed with RS256"
    key = serialization.load_pem_public_key(public_pem.encode())
    assert isinstance(key, rsa.RSAPublicKey)
    try:
        key.verify(signature, f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return "Invalid JWT Signature."
    now = time.time()
    if claims.get("aud") != audience:
        return f"the assertion's aud must be {audience}"
    if SCOPE not in str(claims.get("scope", "")).split():
        return "the assertion asks for no cloud-platform scope"
    if not (claims.get("iat", 0) - 300 <= now < claims.get("exp", 0)) or claims["exp"] - claims["iat"] > 3600:
        return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe."
    if not claims.get("iss"):
        return "the assertion names no issuer"
    return dict(claims)


async def token(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    form = await request.post()
    state.recorder.record(request.method, request.path, {"grant_type": form.get("grant_type")}, {})
    public = state.settings.google_public_key_pem
    if public is None:
        return _error("invalid_client", "this sim has no service account configured", 401)
    if form.get("grant_type") != GRANT:
        return _error("unsupported_grant_type", "Invalid grant_type")
    assertion = form.get("assertion")
    if not isinstance(assertion, str):
        return _error("invalid_request", "assertion is required")
    audience = f"{request.scheme}://{request.host}{request.path}"
    claims = _claims(assertion, public, audience)
    if isinstance(claims, str):
        return _error("invalid_grant", claims)
    minted = "ya29.sim-" + secrets.token_hex(16)
    state.minted_tokens.add(minted)
    return web.Response(
        body=_encoder.encode({"access_token": minted, "expires_in": 3599, "token_type": "Bearer"}),
        content_type="application/json",
    )


def register(app: web.Application) -> None:
    app.router.add_post("/vertex/token", token)
