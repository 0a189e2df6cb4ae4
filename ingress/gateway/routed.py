"""Routing at admission: the rule that matches the requested model picks
the candidates (``ingress.routing``); the first one is the model the request
is admitted for, the rest wait on the context for ``failover``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from ingress.gateway import errors
from ingress.gateway.auth import may_use
from ingress.gateway.errors import GatewayError
from ingress.gateway.smart import pick
from ingress.gateway.state import STATE, RequestContext
from ingress.routing import RouteContext, RoutingRuntime
from streams.config import Model, VirtualKey
from streams.config_routing import root_smart

ROUTING = web.AppKey("nexus_routing", RoutingRuntime)


def no_route(requested: str) -> GatewayError:
    return GatewayError(
        400,
        "invalid_request_error",
        "no_route",
        f"No routing target of {requested!r} applies to this request.",
        param="model",
        stage="route",
    )


async def choose(
    request: web.Request, ctx: RequestContext, key: VirtualKey, kind: str, body: Mapping[str, Any]
) -> Model | None:
    """The first candidate of the rule that matches the requested model
    (None: no rule; the model is looked up as named).  The decision stays on
    the context for the failover loop and the events.  A smart rule asks
    its router model first (``body``: the caller's JSON, for the prompt)."""
    runtime = request.app.get(ROUTING)
    if runtime is None:
        return None
    rule = runtime.rule_for(ctx.requested_model)
    if rule is None:
        return None
    meta = {"id": key.id, "org": key.org, "project": key.project, "user": key.user}
    route_ctx = RouteContext(
        model=ctx.requested_model,
        endpoint=ctx.endpoint,
        stream=ctx.stream,
        headers={k.lower(): v for k, v in request.headers.items() if k.lower() != "authorization"},
        key=meta,
    )
    models = runtime.models

    def allowed(name: str) -> bool:
        return may_use(key, models[name], name)

    routing_rule = rule.name
    smart_pick: str | None = None
    smart = root_smart(rule.strategy)
    if smart is not None and kind == "chat":
        picked = await pick(request.app[STATE], rule.name, smart, models, body, allowed)
        smart_pick, routing_rule = picked.model, picked.routing_rule(rule.name)
    decision = runtime.decide(rule, route_ctx, allowed, smart_pick)
    # Capability filter: an embeddings call only goes to embedding models.
    fit = tuple(c for c in decision.candidates if models[c.model].kind == kind)
    decision = dataclasses.replace(decision, candidates=fit)
    ctx.routing = decision
    ctx.routing_rule = routing_rule
    if not fit:
        if decision.refused:
            raise errors.model_not_allowed(ctx.requested_model)
        raise no_route(ctx.requested_model)
    return models[fit[0].model]
