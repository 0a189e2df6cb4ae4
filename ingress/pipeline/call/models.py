"""``GET /v1/models``: the models the presented key may call, in Anthropic's
shape when the caller sends ``anthropic-version`` (the Anthropic SDK
always does), else OpenAI's."""

from __future__ import annotations

import msgspec

from ingress.pipeline.exchange import Exchange, send_json
from ingress.pipeline.stages.authentication import may_use
from ingress.translate.anthropic_messages import ANTHROPIC_MESSAGES

_encoder = msgspec.json.Encoder()


async def models_call(ex: Exchange) -> None:
    key = ex.key
    assert key is not None
    usable = [m for m in ex.rt.snapshot.config.models if may_use(key, m, m.name)]
    if ex.grammar is ANTHROPIC_MESSAGES:
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
        await send_json(ex, _encoder.encode(body))
        return
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
    await send_json(ex, _encoder.encode({"object": "list", "data": data}))
