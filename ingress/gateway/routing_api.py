"""``POST /internal/routing/explain``: which target a request would take and
why, without sending anything upstream.  Admin-only: the bearer token must
equal the one in the environment variable ``auth.admin_token_env`` names
(compared in constant time); with no token configured the endpoint is off.

Body: ``{"model": "chat-auto", "endpoint": "/v1/chat/completions",
"stream": false, "headers": {"x-tier": "gold"}, "key_id": "k-1"}`` — the
key (optional) brings its org/project/user and its allowed models.  For a
smart rule, ``messages`` (optional, the caller's turns) makes the explain
ask the router model what it would pick (a real call to it); without them
the default is shown."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from ingress.gateway.front import RUNTIME
from ingress.pipeline.errors import GatewayError
from ingress.pipeline.stages.authentication import may_use, require_admin
from ingress.pipeline.stages.routing import key_metadata
from ingress.pipeline.stages.smart import SmartPick, pick
from ingress.routing import RouteContext
from streams.config_routing import root_smart

_encoder = msgspec.json.Encoder()


class ExplainRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    model: str
    endpoint: str = "/v1/chat/completions"
    stream: bool = False
    headers: dict[str, str] = {}
    key_id: str | None = None
    messages: list[dict[str, Any]] | None = None


_decoder = msgspec.json.Decoder(ExplainRequest)


async def explain(request: web.Request) -> web.Response:
    runtime = request[RUNTIME].routing
    require_admin(request.headers, runtime.admin_token)
    try:
        body = _decoder.decode(await request.read())
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise GatewayError(
            400, "invalid_request_error", "invalid_request", f"Invalid request: {exc}"
        ) from None
    state = request[RUNTIME]
    rule = runtime.rule_for(body.model)
    if rule is None:
        model = state.snapshot.models.get(body.model)
        if model is None:
            raise GatewayError(
                404, "invalid_request_error", "model_not_found", f"No model or route {body.model!r}."
            )
        out: dict[str, Any] = {
            "rule": None,
            "target": model.name,
            "candidates": [{"model": model.name, "provider": model.provider}],
        }
        out["steps"] = ["no routing rule: the model is served as named"]
        return web.Response(body=_encoder.encode(out), content_type="application/json")
    key_meta: dict[str, str] = {}
    labels: dict[str, Any] = {}
    key = None
    if body.key_id is not None:
        key = next((k for k in state.snapshot.config.virtual_keys if k.id == body.key_id), None)
        if key is None:
            raise GatewayError(404, "invalid_request_error", "key_not_found", f"No key {body.key_id!r}.")
        key_meta = {"id": key.id, "org": key.org, "project": key.project, "user": key.user}
        labels = key_metadata(state.snapshot, key)
    ctx = RouteContext(
        model=body.model,
        endpoint=body.endpoint,
        stream=body.stream,
        headers={k.lower(): v for k, v in body.headers.items()},
        key=key_meta,
        metadata=labels,
    )
    models = runtime.models

    def allowed(name: str) -> bool:
        return key is None or may_use(key, models[name], name)

    smart = root_smart(rule.strategy)
    picked: SmartPick | None = None
    if smart is not None and body.messages is not None:
        picked = await pick(state, rule.name, smart, models, {"messages": body.messages}, allowed)
    decision = runtime.decide(rule, ctx, allowed, picked.model if picked is not None else None)
    out = decision.explain()
    if smart is not None:
        out["smart"] = {
            "router": smart.router,
            "default": smart.default,
            "asked": picked is not None,
            "pick": picked.model if picked is not None else None,
            "outcome": picked.outcome if picked is not None else None,
            "routing_rule": picked.routing_rule(rule.name) if picked is not None else None,
        }
    return web.Response(body=_encoder.encode(out), content_type="application/json")
