"""Routing at admission: the rule that matches the requested model picks
the candidates (``ingress.routing``); the first one is the model the request
is admitted for, the rest wait on the context for ``failover``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
from aiohttp import web

from adapters.canonical import ChatRequest
from ingress.gateway import errors
from ingress.gateway.auth import may_use
from ingress.gateway.errors import GatewayError
from ingress.gateway.smart import pick
from ingress.gateway.state import STATE, RequestContext
from ingress.routing import Decision, RouteContext, RoutingRuntime
from streams.config import ConfigSnapshot, Model, VirtualKey
from streams.config_routing import Rule, Smart, root_smart

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


@dataclasses.dataclass(frozen=True)
class SmartPending:
    """A smart rule whose router is asked once the request stage has run
    (compliance hooks must see, block or redact a prompt before any
    provider does, the router included)."""

    rule: Rule
    node: Smart
    route: RouteContext
    allowed: Callable[[str], bool]


SMART_PENDING = web.RequestKey("nexus_smart_pending", SmartPending)


def _fit(decision: Decision, models: Mapping[str, Model], kind: str) -> Decision:
    # Capability filter: an embeddings call only goes to embedding models.
    fit = tuple(c for c in decision.candidates if models[c.model].kind == kind)
    return dataclasses.replace(decision, candidates=fit)


def key_metadata(snapshot: ConfigSnapshot, key: VirtualKey) -> dict[str, Any]:
    """What ``metadata.<name>`` conditions see: the org's labels, then the
    project's, then the key's (the nearer one wins)."""
    org, project = snapshot.orgs.get(key.org), snapshot.projects.get(key.project)
    return {
        **(org.metadata if org is not None else {}),
        **(project.metadata if project is not None else {}),
        **key.metadata,
    }


def choose(request: web.Request, ctx: RequestContext, key: VirtualKey, kind: str) -> Model | None:
    """The first candidate of the rule that matches the requested model
    (None: no rule; the model is looked up as named).  The decision stays on
    the context for the failover loop and the events.  A smart rule is
    admitted for its default (or, when the key may not call that, the first
    catalog model it may); ``ask_router`` settles the pick later."""
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
        metadata=key_metadata(request.app[STATE].snapshot, key),
    )
    models = runtime.models

    def allowed(name: str) -> bool:
        return may_use(key, models[name], name)

    decision = _fit(runtime.decide(rule, route_ctx, allowed), models, kind)
    smart = root_smart(rule.strategy)
    if smart is not None and kind == "chat":
        request[SMART_PENDING] = SmartPending(rule, smart, route_ctx, allowed)
        for entry in smart.catalog:
            if decision.candidates:
                break
            decision = _fit(runtime.decide(rule, route_ctx, allowed, entry.model), models, kind)
    ctx.routing = decision
    ctx.routing_rule = rule.name
    if not decision.candidates:
        if decision.refused:
            raise errors.model_not_allowed(ctx.requested_model)
        raise no_route(ctx.requested_model)
    return models[decision.candidates[0].model]


async def ask_router(request: web.Request, ctx: RequestContext, chat: ChatRequest | None) -> None:
    """A smart rule's router call (``chat``: the request as the request stage
    let it through, redactions applied); the decision on the context is
    replaced by the pick's (or the default's)."""
    pending = request.get(SMART_PENDING)
    runtime = request.app.get(ROUTING)
    if pending is None or runtime is None:
        return
    del request[SMART_PENDING]
    body = msgspec.to_builtins(chat) if chat is not None else {}
    models = runtime.models
    picked = await pick(request.app[STATE], pending.rule.name, pending.node, models, body, pending.allowed)
    decision = _fit(
        runtime.decide(pending.rule, pending.route, pending.allowed, picked.model), models, "chat"
    )
    ctx.routing = decision
    ctx.routing_rule = picked.routing_rule(pending.rule.name)
    if not decision.candidates:
        # The router failed and the key may not call the default.
        raise errors.model_not_allowed(ctx.requested_model)
