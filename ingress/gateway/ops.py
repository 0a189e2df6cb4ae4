"""``/healthz`` and ``/metrics``: unauthenticated, outside the in-flight gate."""

from __future__ import annotations

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from ingress.gateway.quota import refresh_metrics
from ingress.gateway.state import STATE

_encoder = msgspec.json.Encoder()


async def healthz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = {"status": "ok", "node": state.node.id, "config_version": state.snapshot.version}
    return web.Response(body=_encoder.encode(body), content_type="application/json")


async def metrics(request: web.Request) -> web.Response:
    await refresh_metrics(request.app[STATE])  # quota gauges: read back from Valkey
    return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})
