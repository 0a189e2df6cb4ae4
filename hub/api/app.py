"""The admin API's aiohttp app (port 3060): the route table, the OpenAPI
document, /healthz and /metrics; beside the admin API, the things' sync
endpoints (hub.fleet.sync) and the proxy fleet's PAC file, CA bundle and
onboarding text (hub.fleet.proxies, public).

    app = create_app(hub)     # hub: hub.api.http.Hub
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hub.api.errors import ApiError
from hub.api.http import HUB, Hub, endpoint, error_response, json_response
from hub.api.openapi import build_openapi
from hub.api.routes import ROUTES
from hub.api.scim import BASE as SCIM_BASE
from hub.api.scim import add_scim_routes, error_answer
from hub.fleet.proxies import add_routes as add_proxy_routes
from hub.fleet.sync import add_routes as add_fleet_routes
from streams.events import uuid7

HEALTH = web.AppKey("nexus_hub_health", object)

HealthFn = Callable[[], dict[str, Any]]


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """aiohttp's own 404/405 answered in the API's error shape."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        err = ApiError("not_found", f"no such route: {request.method} {request.path[:200]}")
    except web.HTTPMethodNotAllowed:
        err = ApiError("method_not_allowed", f"{request.method} is not allowed on {request.path[:200]}")
    if request.path.startswith(SCIM_BASE + "/"):
        return error_answer(err.status, err.message)  # SCIM clients read SCIM's error schema
    request_id = request.headers.get("X-Request-Id", "")[:64] or uuid7()
    resp = error_response(err, request_id)
    resp.headers["X-Request-Id"] = request_id
    return resp


def create_app(hub: Hub, *, health: HealthFn | None = None) -> web.Application:
    app = web.Application(middlewares=[_json_errors], client_max_size=4 * 1024 * 1024 + 1)
    app[HUB] = hub
    for route in ROUTES:
        app.router.add_route(route.method, route.path, endpoint(route))
    add_scim_routes(app)  # /scim/v2: SCIM tokens, not sessions (not in the admin API's document)
    document = build_openapi(ROUTES)

    async def openapi(_: web.Request) -> web.Response:
        return json_response(document)

    async def healthz(_: web.Request) -> web.Response:
        body = health() if health is not None else {"status": "ok"}
        return json_response(body, status=200 if body.get("status") == "ok" else 503)

    async def metrics(_: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest())
        resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return resp

    if hub.fleet is not None:
        add_fleet_routes(app, hub.fleet)
    add_proxy_routes(app)  # without a registry they answer 503, not a bare 404
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app
