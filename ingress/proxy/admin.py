"""The proxy's admin listener (aiohttp; the CONNECT side is not aiohttp):
``/healthz``, ``/metrics``, the node's break-glass switch, and, until the
Hub serves them, the PAC file, the CA certificate and onboarding text.

Nothing here is tenant data; the break-glass endpoint wants the node's own
admin token (``proxy.admin_token_env``), compared in constant time.
"""

from __future__ import annotations

import datetime as dt
import hmac

import msgspec
from aiohttp import web
from prometheus_client import REGISTRY, generate_latest

from ingress.proxy.node import ProxyNode
from streams.config_hooks import MAX_OVERRIDE

NODE = web.AppKey("nexus_proxy_node", ProxyNode)
TOKEN = web.AppKey("nexus_proxy_admin_token", str)

_encoder = msgspec.json.Encoder()


class _BreakGlassBody(msgspec.Struct, forbid_unknown_fields=True):
    reason: str
    duration_s: float = 3600.0


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(data), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": {"message": message}}, status)


async def healthz(request: web.Request) -> web.Response:
    node = request.app[NODE]
    kill = node.kill.state()
    return _json(
        {
            "status": "ok",
            "node": node.node.id,
            "listen": f"{node.host}:{node.port}",
            "tunnels": node.tunnels,
            "bumping": node.minter is not None,
            "kill_switch": kill.engaged,
        }
    )


async def metrics(request: web.Request) -> web.Response:
    node = request.app[NODE]
    node.metrics.kill_switch.set(1 if node.kill.state().engaged else 0)
    body = node.metrics.render() + generate_latest(REGISTRY)
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


def pac_file(proxy: str) -> str:
    """Everything through the proxy (shadow-AI discovery needs every host),
    except plain and private names, which stay direct."""
    return (
        "function FindProxyForURL(url, host) {\n"
        '  if (isPlainHostName(host) || host === "localhost" || dnsDomainIs(host, ".localhost") ||\n'
        '      shExpMatch(host, "127.*") || shExpMatch(host, "10.*") || shExpMatch(host, "192.168.*"))\n'
        '    return "DIRECT";\n'
        f'  return "PROXY {proxy}; DIRECT";\n'
        "}\n"
    )


async def pac(request: web.Request) -> web.Response:
    node = request.app[NODE]
    # The name the client used to reach us is the one it can reach the proxy by.
    host = request.url.host or node.host
    return web.Response(
        text=pac_file(f"{host}:{node.port}"), content_type="application/x-ns-proxy-autoconfig"
    )


async def ca(request: web.Request) -> web.Response:
    node = request.app[NODE]
    if not node.authorities:
        return _error(404, "this proxy has no CA configured (it splices everything)")
    return web.Response(
        body=node.ca_bundle,
        content_type="application/x-pem-file",
        headers={"Content-Disposition": 'attachment; filename="nexus-proxy-ca.pem"'},
    )


def onboarding_text(admin: str, proxy: str) -> str:
    return f"""Nexus compliance proxy: onboarding
(served by the proxy's admin listener until the Hub serves it)

Proxy:          http://{proxy}
PAC file:       http://{admin}/proxy.pac
CA certificate: http://{admin}/ca.pem   (save it as nexus-ca.pem)

Python (openai, anthropic, requests, httpx read certifi, not the OS store):
  export HTTPS_PROXY=http://{proxy}
  export SSL_CERT_FILE=$PWD/nexus-ca.pem REQUESTS_CA_BUNDLE=$PWD/nexus-ca.pem
Node.js (adds to its built-in roots):
  export HTTPS_PROXY=http://{proxy} NODE_EXTRA_CA_CERTS=$PWD/nexus-ca.pem
curl:
  curl --proxy http://{proxy} --cacert nexus-ca.pem https://api.openai.com/v1/models
Browsers (Chromium and Firefox on Linux read an NSS database):
  certutil -d sql:$HOME/.pki/nssdb -A -t "C,," -n nexus-proxy -i nexus-ca.pem
  then set the PAC URL above as the automatic proxy configuration
  (chromium --proxy-pac-url=http://{admin}/proxy.pac).
macOS / Windows: import nexus-ca.pem into the system trust store (MDM profile),
and set the PAC URL in the network settings.
"""


async def onboarding(request: web.Request) -> web.Response:
    node = request.app[NODE]
    host = request.url.host or node.host
    return web.Response(text=onboarding_text(request.host, f"{host}:{node.port}"))


def _authorized(request: web.Request) -> web.Response | None:
    token = request.app[TOKEN]
    if not token:
        return _error(403, "break-glass is disabled: set the node's admin token (proxy.admin_token_env)")
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), token.encode()):
        return _error(401, "a valid admin token is required (Authorization: Bearer ...)")
    return None


async def break_glass_get(request: web.Request) -> web.Response:
    if (denied := _authorized(request)) is not None:
        return denied
    state = request.app[NODE].kill.state()
    return _json(
        {
            "engaged": state.engaged,
            "source": state.source,
            "reason": state.reason,
            "until": state.until.isoformat() if state.until else None,
        }
    )


async def break_glass_put(request: web.Request) -> web.Response:
    if (denied := _authorized(request)) is not None:
        return denied
    try:
        body = msgspec.json.decode(await request.read(), type=_BreakGlassBody)
    except msgspec.ValidationError as exc:
        return _error(400, f"body: {exc}")
    except msgspec.DecodeError:
        return _error(400, "body: not JSON")
    if not 0 < body.duration_s <= MAX_OVERRIDE.total_seconds():
        return _error(400, "duration_s: more than 0 and at most 8 hours (28800)")
    node = request.app[NODE]
    try:
        state = node.kill.engage(body.reason, dt.timedelta(seconds=body.duration_s), request.remote or "")
    except ValueError as exc:
        return _error(400, f"reason: {exc}")
    assert state.until is not None
    return _json({"engaged": True, "until": state.until.isoformat()})


async def break_glass_delete(request: web.Request) -> web.Response:
    if (denied := _authorized(request)) is not None:
        return denied
    request.app[NODE].kill.release(request.remote or "")
    return _json({"engaged": request.app[NODE].kill.state().engaged})


def create_admin_app(node: ProxyNode, token: str) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[NODE] = node
    app[TOKEN] = token
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/proxy.pac", pac)
    app.router.add_get("/ca.pem", ca)
    app.router.add_get("/onboarding", onboarding)
    app.router.add_get("/break-glass", break_glass_get)
    app.router.add_put("/break-glass", break_glass_put)
    app.router.add_delete("/break-glass", break_glass_delete)
    return app
