"""``/healthz`` and ``/metrics`` (unauthenticated, outside the in-flight
gate: they carry no tenant's data and cost no Valkey call), and
``/metrics/tenants`` (per-budget spend, limits and remaining, read back
from Valkey at each scrape: for operators, with the admin token)."""

from __future__ import annotations

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from ingress.gateway.front import RUNTIME
from ingress.pipeline.stages.authentication import require_admin
from ingress.pipeline.stages.quota import TENANT_REGISTRY, refresh_metrics

_encoder = msgspec.json.Encoder()


async def healthz(request: web.Request) -> web.Response:
    state = request[RUNTIME]
    snap = state.snapshot
    body = {
        "status": "ok",
        "node": state.node.id,
        "config_version": snap.version,
        "config_revision": snap.revision,
    }
    return web.Response(body=_encoder.encode(body), content_type="application/json")


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def tenant_metrics(request: web.Request) -> web.Response:
    require_admin(request.headers, request[RUNTIME].routing.admin_token)
    await refresh_metrics(request[RUNTIME])  # quota gauges: read back from Valkey
    return web.Response(body=generate_latest(TENANT_REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})
