"""The proxy fleet as its clients see it: the PAC file, the CA bundle and
the onboarding text, served by the Hub from what each proxy node reports
(``streams.snapshots.ProxyEndpoint`` in its node report).

    GET /proxy.pac          every online proxy node, then DIRECT
    GET /proxy/ca.pem       the online nodes' CA certificates, each once
    GET /proxy/onboarding   per client: trust the CA, use the proxy or the PAC

Public on purpose: a browser fetches a PAC file with no credentials, and a
CA certificate is public by nature.  What they hold is addresses and
certificates, never a node id, an org or a name.  They are not admin
actions: not in the admin API's OpenAPI document nor in its audit trail
(every browser fetches the PAC at every network change), like the things'
sync endpoints (``hub.fleet.sync``).  Errors use the admin API's shape.

Online is the fleet registry's notion: a ``proxy`` thing whose status is
online or drift (it reported within three heartbeats and is not revoked;
drift means its config lags, not that clients cannot reach it).  A node
that stops reporting leaves the PAC file three heartbeats later; until
then a browser that finds it down takes the next entry, then DIRECT.

What a node reports is checked again here, though nodes write their
reports from inside the NATS trust boundary: an address goes into the PAC's
JavaScript only if it is a well-formed host and port, and a certificate is
served only re-encoded from a parsed CA certificate (so nothing else in the
reported text, a key least of all, can reach a client).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from hub.api.errors import ApiError
from hub.api.http import HUB, error_response, request_origin
from hub.fleet.drift import Status
from hub.fleet.registry import Registry
from streams.config_base import ConfigError
from streams.config_proxy import parse_proxy_address, proxy_address
from streams.events import uuid7
from streams.proxy_onboarding import PAC_TYPE, onboarding_text, pac_file

log = logging.getLogger("nexus.hub.fleet")

PAC_PATH = "/proxy.pac"
CA_PATH = "/proxy/ca.pem"
ONBOARDING_PATH = "/proxy/onboarding"
SERVING: frozenset[Status] = frozenset({"online", "drift"})


@dataclass(frozen=True)
class ProxyFleet:
    addresses: tuple[str, ...]  # sorted, each once (nodes behind one balancer advertise one)
    ca_bundle: bytes  # PEM certificates, each once, in the order the nodes list them


@functools.lru_cache(maxsize=256)
def _address(reported: str) -> str | None:
    """The reported address as the PAC writes it, or None (logged once per
    value: the PAC is fetched far more often than nodes change)."""
    try:
        host, port = parse_proxy_address(reported, where="a proxy node's reported address")
    except ConfigError as exc:
        log.warning("proxy fleet: %s; the node is left out of the PAC file", exc)
        return None
    if port is None:
        log.warning("proxy fleet: reported address %r has no port; left out of the PAC file", reported[:100])
        return None
    return proxy_address(host, port)


@functools.lru_cache(maxsize=256)
def _ca_certificate(pem: str) -> tuple[bytes, bytes] | None:
    """(sha256 of the DER, the PEM re-encoded) of one CA certificate, or None."""
    text = pem.strip()
    if not text.startswith("-----BEGIN CERTIFICATE-----") or text.count("-----BEGIN ") != 1:
        log.warning("proxy fleet: a reported CA is not one PEM certificate; not served")
        return None
    try:
        cert = x509.load_pem_x509_certificate(text.encode())
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (ValueError, x509.ExtensionNotFound):
        is_ca = False
    if not is_ca:
        log.warning("proxy fleet: a reported CA certificate is unreadable or not a CA; not served")
        return None
    return cert.fingerprint(hashes.SHA256()), cert.public_bytes(serialization.Encoding.PEM)


def proxy_fleet(registry: Registry, now_ms: int | None = None) -> ProxyFleet:
    """The online proxy nodes' addresses and CA certificates."""
    now = registry.clock() if now_ms is None else now_ms
    addresses: set[str] = set()
    certs: dict[bytes, bytes] = {}
    proxies = sorted((t for t in registry.things() if t.spec.type == "proxy"), key=lambda t: t.id)
    for thing in proxies:
        report = registry.report(thing)
        if report is None or report.proxy is None or registry.status(thing, now) not in SERVING:
            continue
        address = _address(report.proxy.address)
        if address is None:
            continue
        addresses.add(address)
        for pem in report.proxy.ca_certificates:
            cert = _ca_certificate(pem)
            if cert is not None:
                certs.setdefault(*cert)
    return ProxyFleet(tuple(sorted(addresses)), b"".join(certs.values()))


def _fleet(request: web.Request) -> ProxyFleet:
    registry = request.app[HUB].fleet
    if registry is None:
        raise ApiError("unavailable", "the fleet registry is not running in this Hub")
    return proxy_fleet(registry)


def _base_url(request: web.Request) -> str:
    """This Hub's URL as the client reached it (the configured public URL
    first, as for OIDC redirects)."""
    hub = request.app[HUB]
    if hub.public_url:
        return hub.public_url.rstrip("/")
    _, secure = request_origin(request, hub.trusted_proxies)
    return f"{'https' if secure else 'http'}://{request.host}"


def _text(body: str | bytes, content_type: str, **headers: str) -> web.Response:
    if isinstance(body, str):
        resp = web.Response(text=body, content_type=content_type, charset="utf-8")
    else:
        resp = web.Response(body=body, content_type=content_type)
    # The fleet changes: a client revalidates rather than keep an old list.
    resp.headers["Cache-Control"] = "no-cache"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers.update(headers)
    return resp


async def pac(request: web.Request) -> web.StreamResponse:
    return _text(pac_file(_fleet(request).addresses), PAC_TYPE)


async def ca_bundle(request: web.Request) -> web.StreamResponse:
    fleet = _fleet(request)
    if not fleet.ca_bundle:
        raise ApiError(
            "not_found",
            "no online proxy node reports a CA (none is online, or they splice everything)",
        )
    return _text(
        fleet.ca_bundle,
        "application/x-pem-file",
        **{"Content-Disposition": 'attachment; filename="nexus-ca.pem"'},
    )


async def onboarding(request: web.Request) -> web.StreamResponse:
    base = _base_url(request)
    text = onboarding_text(
        proxies=_fleet(request).addresses,
        pac_url=base + PAC_PATH,
        ca_url=base + CA_PATH,
        served_by="the Nexus Hub, for every online proxy node",
    )
    return _text(text, "text/plain")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _answering(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        request_id = request.headers.get("X-Request-Id", "")[:64] or uuid7()
        try:
            resp = await handler(request)
        except ApiError as err:
            resp = error_response(err, request_id)
        resp.headers["X-Request-Id"] = request_id
        return resp

    return wrapped


def add_routes(app: web.Application) -> None:
    app.router.add_get(PAC_PATH, _answering(pac))
    app.router.add_get(CA_PATH, _answering(ca_bundle))
    app.router.add_get(ONBOARDING_PATH, _answering(onboarding))
