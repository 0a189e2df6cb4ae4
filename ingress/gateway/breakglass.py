"""``/internal/break-glass``: this node's own kill switch (GET the state,
PUT ``{"reason", "duration_s"}`` to engage it for at most 8 hours, DELETE to
release it).  Admin-only: the bearer token must equal the node's admin token
(``auth.admin_token_env``), compared in constant time; with no token the
endpoint is off.  It acts on this node alone; the fleet switch is the Hub's
command (``POST /api/admin/kill-switch/engage``) and cannot be set here."""

from __future__ import annotations

import datetime as dt

import msgspec
from aiohttp import web

from ingress.gateway.front import RUNTIME
from ingress.pipeline.breakglass import BreakGlassSwitch
from ingress.pipeline.errors import GatewayError
from ingress.pipeline.runtime import Node
from ingress.pipeline.stages.authentication import require_admin

_encoder = msgspec.json.Encoder()
MAX_S = 8 * 3600


class Engage(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    reason: str
    duration_s: float = 3600.0


def _switch(node: Node) -> BreakGlassSwitch:
    if node.break_glass is None:
        node.break_glass = BreakGlassSwitch(node.id, node.publisher)
    return node.break_glass


def _bad(message: str, param: str) -> GatewayError:
    return GatewayError(400, "invalid_request_error", "invalid_request", message, param=param)


def _answer(node: Node) -> web.Response:
    rt = node.runtime
    fleet = rt.snapshot.config.hooks.kill_switch if rt is not None else None
    local = node.break_glass.current() if node.break_glass is not None else None
    body = {
        "node": node.id.id,
        "break_glass": {
            "engaged": local is not None,
            "reason": local.reason if local else "",
            "until": local.until.isoformat() if local else None,
        },
        # The fleet switch as this node runs it (read only here).
        "fleet": {"engaged": bool(fleet and fleet.engaged), "reason": fleet.reason if fleet else ""},
    }
    return web.Response(body=_encoder.encode(body), content_type="application/json")


async def get_break_glass(request: web.Request) -> web.Response:
    rt = request[RUNTIME]
    require_admin(request.headers, rt.routing.admin_token)
    return _answer(rt.host)


async def put_break_glass(request: web.Request) -> web.Response:
    rt = request[RUNTIME]
    require_admin(request.headers, rt.routing.admin_token)
    try:
        body = msgspec.json.decode(await request.read(), type=Engage)
    except msgspec.ValidationError as exc:
        raise _bad(f"Invalid request: {exc}", "body") from None
    except msgspec.DecodeError:
        raise _bad("Invalid request: the body is not JSON.", "body") from None
    if not 0 < body.duration_s <= MAX_S:
        raise _bad(f"duration_s: more than 0 and at most {MAX_S} (8 hours).", "duration_s")
    try:
        _switch(rt.host).engage(body.reason, dt.timedelta(seconds=body.duration_s), request.remote or "")
    except ValueError as exc:
        raise _bad(f"reason: {exc}.", "reason") from None
    return _answer(rt.host)


async def delete_break_glass(request: web.Request) -> web.Response:
    rt = request[RUNTIME]
    require_admin(request.headers, rt.routing.admin_token)
    _switch(rt.host).release(request.remote or "")
    return _answer(rt.host)
