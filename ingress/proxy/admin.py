"""The proxy's admin listener (aiohttp; the CONNECT side is not aiohttp):
``/healthz``, ``/metrics``, the node's break-glass switch, and this node's
own PAC file, CA certificate and onboarding text.  With a Hub, clients take
those from the Hub instead (``/proxy.pac``, ``/proxy/ca.pem``,
``/proxy/onboarding`` on :3060: every online node of the fleet, from what
each reports); these stay for a proxy run without one.

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
from streams.config_base import ConfigError
from streams.config_hooks import MAX_OVERRIDE
from streams.config_proxy import parse_proxy_address, proxy_address
from streams.proxy_onboarding import PAC_TYPE, onboarding_text, pac_file

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


def _client_host(request: web.Request, node: ProxyNode) -> str:
    """The name the client used to reach us: the one it can reach the proxy
    by.  It goes into the PAC's JavaScript, so only a well-formed host
    name or IP; anything else gets the listen address."""
    try:
        host, _ = parse_proxy_address(request.url.host or "", where="Host")
    except (ConfigError, ValueError):
        return str(node.host)
    return host


async def pac(request: web.Request) -> web.Response:
    node = request.app[NODE]
    host = _client_host(request, node)
    return web.Response(text=pac_file([proxy_address(host, node.port)]), content_type=PAC_TYPE)


async def ca(request: web.Request) -> web.Response:
    node = request.app[NODE]
    if not node.authorities:
        return _error(404, "this proxy has no CA configured (it splices everything)")
    return web.Response(
        body=node.ca_bundle,
        content_type="application/x-pem-file",
        headers={"Content-Disposition": 'attachment; filename="nexus-proxy-ca.pem"'},
    )


async def onboarding(request: web.Request) -> web.Response:
    node = request.app[NODE]
    host = _client_host(request, node)
    admin = f"http://{proxy_address(host, request.url.port or 80)}"
    text = onboarding_text(
        proxies=[proxy_address(host, node.port)],
        pac_url=f"{admin}/proxy.pac",
        ca_url=f"{admin}/ca.pem",
        served_by="this proxy node's admin listener; with a Hub, its /proxy/onboarding covers the fleet",
    )
    return web.Response(text=text)


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
