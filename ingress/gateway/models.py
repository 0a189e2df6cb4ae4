"""``GET /v1/models``: the models the presented key may call, in Anthropic's
shape when the caller sends ``anthropic-version`` (the Anthropic SDK
always does), else OpenAI's."""

from __future__ import annotations

import msgspec
from aiohttp import web

from ingress.gateway.auth import authenticate, may_use
from ingress.gateway.state import CTX, STATE
from ingress.translate.grammar import ANTHROPIC_MESSAGES

_encoder = msgspec.json.Encoder()


async def list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    ctx = request[CTX]
    ctx.endpoint = "models"
    anthropic = "anthropic-version" in request.headers
    if anthropic:
        ctx.grammar = ANTHROPIC_MESSAGES
    key = authenticate(request.headers, state.snapshot, "x-api-key" if anthropic else None)
    ctx.set_key(key)
    usable = [m for m in state.snapshot.config.models if may_use(key, m, m.name)]
    if anthropic:
        listed = [
            {"type": "model", "id": m.name, "display_name": m.name, "created_at": "1970-01-01T00:00:00Z"}
            for m in usable
        ]
        body = {
            "data": listed,
            "has_more": False,
            "first_id": listed[0]["id"] if listed else None,
            "last_id": listed[-1]["id"] if listed else None,
        }
        return web.Response(body=_encoder.encode(body), content_type="application/json")
    data = [
        {
            "id": m.name,
            "object": "model",
            "created": 0,
            "owned_by": m.provider,
            "aliases": list(m.aliases),
            "kind": m.kind,
        }
        for m in usable
    ]
    return web.Response(
        body=_encoder.encode({"object": "list", "data": data}), content_type="application/json"
    )
