"""``GET /v1/models``: the models the presented key may call."""

from __future__ import annotations

import msgspec
from aiohttp import web

from ingress.gateway.auth import authenticate, may_use
from ingress.gateway.state import CTX, STATE

_encoder = msgspec.json.Encoder()


async def list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    ctx = request[CTX]
    ctx.endpoint = "models"
    key = authenticate(request.headers, state.snapshot)
    ctx.set_key(key)
    data = [
        {
            "id": m.name,
            "object": "model",
            "created": 0,
            "owned_by": m.provider,
            "aliases": list(m.aliases),
            "kind": m.kind,
        }
        for m in state.snapshot.config.models
        if may_use(key, m, m.name)
    ]
    return web.Response(
        body=_encoder.encode({"object": "list", "data": data}), content_type="application/json"
    )
