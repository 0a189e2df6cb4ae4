"""OpenID Connect, the relying party's side: discovery, the provider's keys
(JWKS, refetched when a token names a key not seen yet, at most once per
``min_refetch_s``), the authorization code exchange with PKCE (S256), and
the ID token's checks.  No HTTP routes here (hub/api/oidc.py) and no
provisioning (hub/signin/federation.py).

The ID token is checked with PyJWT (signature, ``aud``, ``iss``), never by
hand; this module chooses what PyJWT may accept:

- the algorithm must be in the identity provider's allow-list, itself a
  subset of the asymmetric algorithms (no ``none``, no HS*: a provider's
  public key is public, so an HMAC "signed" with it proves nothing);
- the key is the provider's JWKS entry named by ``kid`` and built for that
  algorithm (an RSA key is not accepted for an ES256 header);
- ``exp``, ``nbf`` and ``iat`` against the Hub's clock (injectable) with
  the provider's clock skew tolerance; ``iat`` not older than
  ``MAX_TOKEN_AGE_S``; ``azp`` when there are several audiences; ``nonce``
  equal to the one the flow sent (compared in constant time).

Every outbound URL (the issuer, the endpoints its discovery document names)
passes the SSRF rule operators' URLs pass elsewhere
(``streams.config_checks.check_outbound_url``): https, and no private,
loopback or link-local address unless the provider's
``allow_private_network`` says so; the connection's resolver checks the
addresses a name resolves to when it connects (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import jwt
from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver

from streams.config_base import ConfigError
from streams.config_checks import check_outbound_url

log = logging.getLogger("nexus.hub.oidc")

# What an identity provider may sign ID tokens with (its own list narrows this).
ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
MAX_TOKEN_AGE_S = 600  # an ID token's iat older than this (plus skew) is refused
MAX_DOCUMENT = 1024 * 1024
_TIMEOUT = aiohttp.ClientTimeout(total=10)


class OidcError(Exception):
    """Sign-in through the identity provider failed.  ``reason`` is a short
    code for the audit trail; the message is safe to show the caller."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


# --- PKCE, state, nonce ---------------------------------------------------------------


def random_token() -> str:
    return secrets.token_urlsafe(32)


def pkce_challenge(verifier: str) -> str:
    """S256 (RFC 7636): base64url(sha256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# --- outbound HTTP with the SSRF guard ------------------------------------------------


class _PublicOnlyResolver(ThreadedResolver):
    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await super().resolve(host, port, family)
        for r in results:
            ip = ipaddress.ip_address(str(r["host"]).split("%", 1)[0])
            if not ip.is_global or ip.is_multicast:
                raise OSError(f"{host} resolves to a non-public address; refused")
        return results


def guard_url(url: str, *, allow_private: bool, where: str) -> None:
    """The SSRF rule, plus https unless private networks are allowed (a
    loopback test provider speaks plain http)."""
    try:
        check_outbound_url(url, allow_private=allow_private, where=where)
    except ConfigError as exc:
        raise OidcError("url_refused", str(exc)) from None
    if not allow_private and urlsplit(url).scheme != "https":
        raise OidcError("url_refused", f"{where}: {url!r} must be https")


class Outbound:
    """The Hub's HTTP clients for identity providers: one whose resolver
    refuses non-public addresses, one for providers allowed on private
    networks."""

    def __init__(self) -> None:
        self._sessions: dict[bool, aiohttp.ClientSession] = {}

    def session(self, allow_private: bool) -> aiohttp.ClientSession:
        s = self._sessions.get(allow_private)
        if s is None or s.closed:
            resolver = ThreadedResolver() if allow_private else _PublicOnlyResolver()
            s = self._sessions[allow_private] = aiohttp.ClientSession(
                timeout=_TIMEOUT, connector=aiohttp.TCPConnector(resolver=resolver, limit=32)
            )
        return s

    async def close(self) -> None:
        for s in self._sessions.values():
            await s.close()
        self._sessions.clear()


async def _read_json(resp: aiohttp.ClientResponse, what: str) -> Any:
    data = await resp.content.read(MAX_DOCUMENT + 1)
    if len(data) > MAX_DOCUMENT:
        raise OidcError("provider_error", f"{what}: the answer is over {MAX_DOCUMENT} bytes")
    try:
        return json.loads(data)
    except ValueError:
        raise OidcError("provider_error", f"{what}: the answer is not JSON") from None


# --- one provider -----------------------------------------------------------------------


@dataclass(frozen=True)
class Discovery:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    code_challenge_methods: tuple[str, ...]


@dataclass
class ProviderClient:
    """An identity provider's discovery document and keys, cached."""

    issuer: str
    allow_private: bool
    outbound: Outbound
    min_refetch_s: float = 60.0
    discovery_ttl_s: float = 3600.0
    monotonic: Callable[[], float] = time.monotonic
    jwks_fetches: int = 0
    _discovery: Discovery | None = None
    _discovered_at: float = 0.0
    _keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    _keys_at: float = -1e18
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def _get(self, url: str, what: str) -> Any:
        guard_url(url, allow_private=self.allow_private, where=what)
        try:
            async with self.outbound.session(self.allow_private).get(
                url, allow_redirects=False, headers={"Accept": "application/json"}
            ) as resp:
                if resp.status != 200:
                    raise OidcError("provider_error", f"{what}: the provider answered {resp.status}")
                return await _read_json(resp, what)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise OidcError("provider_unreachable", f"{what}: {type(exc).__name__}") from None

    async def discovery(self) -> Discovery:
        if self._discovery is not None and self.monotonic() - self._discovered_at < self.discovery_ttl_s:
            return self._discovery
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        doc = await self._get(url, "discovery")
        if not isinstance(doc, dict):
            raise OidcError("provider_error", "discovery: not an object")
        # OpenID Connect Discovery 4.3: the document's issuer is exactly the one asked.
        if doc.get("issuer") != self.issuer:
            raise OidcError("provider_error", "discovery: the document names another issuer")
        endpoints = {}
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = doc.get(name)
            if not isinstance(value, str):
                raise OidcError("provider_error", f"discovery: no {name}")
            guard_url(value, allow_private=self.allow_private, where=name)
            endpoints[name] = value
        methods = doc.get("code_challenge_methods_supported") or []
        self._discovery = Discovery(
            issuer=self.issuer,
            code_challenge_methods=tuple(m for m in methods if isinstance(m, str)),
            **endpoints,
        )
        self._discovered_at = self.monotonic()
        return self._discovery

    async def _refresh_keys(self) -> None:
        disc = await self.discovery()
        doc = await self._get(disc.jwks_uri, "jwks")
        self.jwks_fetches += 1
        self._keys_at = self.monotonic()
        keys = doc.get("keys") if isinstance(doc, dict) else None
        if not isinstance(keys, list):
            raise OidcError("provider_error", "jwks: no keys")
        self._keys = {
            str(k.get("kid", "")): k
            for k in keys
            if isinstance(k, dict) and k.get("use", "sig") == "sig" and isinstance(k.get("kty"), str)
        }

    async def key(self, kid: str, alg: str) -> jwt.PyJWK:
        """The provider's key ``kid`` for ``alg``.  A kid not in the cached
        set refetches the JWKS (the provider rotated its keys), but not
        more often than ``min_refetch_s``: tokens naming made-up kids
        cannot make the Hub hammer the provider."""
        async with self._lock:
            jwk = self._pick(kid)
            if jwk is None and self.monotonic() - self._keys_at >= self.min_refetch_s:
                await self._refresh_keys()
                jwk = self._pick(kid)
        if jwk is None:
            raise OidcError("unknown_key", "the ID token is signed with a key the provider does not publish")
        try:
            return jwt.PyJWK(jwk, algorithm=alg)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            raise OidcError("bad_key", f"the provider's key {kid[:64]!r} is not a {alg} key") from None

    def _pick(self, kid: str) -> dict[str, Any] | None:
        if kid:
            return self._keys.get(kid)
        # No kid: only unambiguous with a single key.
        return next(iter(self._keys.values())) if len(self._keys) == 1 else None

    def authorization_url(
        self,
        disc: Discovery,
        *,
        client_id: str,
        redirect_uri: str,
        scopes: tuple[str, ...],
        state: str,
        nonce: str,
        verifier: str,
    ) -> str:
        query = urlencode(
            {
                "response_type": "code",
                "client_id": client_id,
                "redirect_uri": redirect_uri,
                "scope": " ".join(scopes),
                "state": state,
                "nonce": nonce,
                "code_challenge": pkce_challenge(verifier),
                "code_challenge_method": "S256",
            }
        )
        sep = "&" if urlsplit(disc.authorization_endpoint).query else "?"
        return f"{disc.authorization_endpoint}{sep}{query}"

    async def exchange(
        self, *, code: str, verifier: str, redirect_uri: str, client_id: str, client_secret: str
    ) -> dict[str, Any]:
        """The token endpoint's answer to the authorization code (client
        authentication: client_secret_basic, or none for a public client)."""
        disc = await self.discovery()
        guard_url(disc.token_endpoint, allow_private=self.allow_private, where="token_endpoint")
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        headers = {"Accept": "application/json"}
        if client_secret:
            headers["Authorization"] = aiohttp.encode_basic_auth(
                _form_quote(client_id), _form_quote(client_secret)
            )
        else:
            form["client_id"] = client_id
        try:
            async with self.outbound.session(self.allow_private).post(
                disc.token_endpoint,
                data=form,
                allow_redirects=False,
                headers=headers,
            ) as resp:
                doc = await _read_json(resp, "token endpoint")
                if resp.status != 200:
                    err = doc.get("error", "") if isinstance(doc, dict) else ""
                    raise OidcError("code_refused", f"the provider refused the code ({str(err)[:64]})")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise OidcError("provider_unreachable", f"token endpoint: {type(exc).__name__}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("id_token"), str):
            raise OidcError("provider_error", "the token endpoint sent no ID token")
        return doc

    async def verify_id_token(
        self,
        raw: str,
        *,
        client_id: str,
        nonce: str,
        algorithms: tuple[str, ...],
        skew_s: int,
        now: float | None = None,
    ) -> dict[str, Any]:
        """The ID token's claims once every check passed (OidcError else)."""
        try:
            header = jwt.get_unverified_header(raw)
        except jwt.PyJWTError:
            raise OidcError("malformed_token", "the ID token is not a JWT") from None
        alg = header.get("alg")
        allowed = [a for a in algorithms if a in ASYMMETRIC_ALGORITHMS]
        if not isinstance(alg, str) or alg not in allowed:
            raise OidcError("algorithm_refused", f"ID tokens signed with {str(alg)[:16]!r} are not accepted")
        kid = header.get("kid", "")
        key = await self.key(kid if isinstance(kid, str) else "", alg)
        try:
            claims: dict[str, Any] = jwt.decode(
                raw,
                key=key,
                algorithms=[alg],
                audience=client_id,
                issuer=self.issuer,
                # Times are checked below against the Hub's (injectable) clock.
                options={
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "require": ["iss", "aud", "sub", "exp", "iat"],
                },
            )
        except jwt.InvalidSignatureError:
            raise OidcError("bad_signature", "the ID token's signature does not verify") from None
        except jwt.InvalidAudienceError:
            raise OidcError("wrong_audience", "the ID token is not for this client") from None
        except jwt.InvalidIssuerError:
            raise OidcError("wrong_issuer", "the ID token is from another issuer") from None
        except jwt.PyJWTError as exc:
            raise OidcError("invalid_token", f"the ID token is not valid ({type(exc).__name__})") from None
        _check_times(claims, now if now is not None else time.time(), skew_s)
        aud = claims["aud"]
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != client_id:
            raise OidcError("wrong_audience", "the ID token's azp is not this client")
        sent = claims.get("nonce")
        if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), nonce.encode()):
            raise OidcError("wrong_nonce", "the ID token does not carry this sign-in's nonce")
        return claims


def _form_quote(value: str) -> str:
    # RFC 6749 2.3.1: client id and secret are form-urlencoded before Basic.
    from urllib.parse import quote_plus

    return quote_plus(value)


def _check_times(claims: Mapping[str, Any], now: float, skew: int) -> None:
    def number(name: str) -> float | None:
        value = claims.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise OidcError("invalid_token", f"the ID token's {name} is not a number")
        return float(value)

    exp, iat, nbf = number("exp"), number("iat"), number("nbf")
    assert exp is not None and iat is not None  # required above
    if now > exp + skew:
        raise OidcError("expired", "the ID token has expired")
    if iat > now + skew:
        raise OidcError("not_yet_valid", "the ID token is issued in the future")
    if now - iat > MAX_TOKEN_AGE_S + skew:
        raise OidcError("expired", "the ID token is too old")
    if nbf is not None and nbf > now + skew:
        raise OidcError("not_yet_valid", "the ID token is not valid yet")


class OidcClients:
    """The Hub's identity provider clients, one per provider configuration
    (a changed issuer or network rule is a new client), sharing the
    outbound HTTP sessions."""

    def __init__(self, *, min_refetch_s: float = 60.0) -> None:
        self.outbound = Outbound()
        self.min_refetch_s = min_refetch_s
        self._clients: dict[tuple[str, str, bool], ProviderClient] = {}

    def client(self, provider_id: str, issuer: str, allow_private: bool) -> ProviderClient:
        key = (provider_id, issuer, allow_private)
        c = self._clients.get(key)
        if c is None:
            for old in [k for k in self._clients if k[0] == provider_id]:
                del self._clients[old]
            c = self._clients[key] = ProviderClient(
                issuer, allow_private, self.outbound, min_refetch_s=self.min_refetch_s
            )
        return c

    async def close(self) -> None:
        await self.outbound.close()
