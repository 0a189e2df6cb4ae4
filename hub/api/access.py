"""Asking about rights: auth/me, iam/simulate and iam/allowed-actions
(signing in and out: hub/api/signin)."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from hub.api.errors import ApiError
from hub.api.http import Call, json_response
from hub.authz import decide_access, principal_of
from hub.iam import ACTIONS, Decision, NrnError, allowed_actions, parse_nrn
from hub.state import HubState
from hub.views import Item, view
from streams.config_hub import UserSpec


class Me(msgspec.Struct, kw_only=True):
    nrn: str
    user: Item[UserSpec]
    policies: list[str]  # the policies that apply, with where ("NexusOrgAdmin@acme")
    # How the caller is signed in: session (a sign-in) or api_token.
    via: str = "session"
    token_id: str = ""  # the API token's id (via api_token)
    narrowed_by: list[str] = []  # the policy an API token is narrowed to
    session_id: str = ""
    # A console that lost it can read it here (a GET: no cross-site
    # page can read the answer).
    csrf_token: str = ""


async def me(call: Call) -> web.Response:
    call.self_service()
    assert call.principal is not None
    user = call.state.get("user", call.principal.user_id)
    assert user is not None
    return json_response(
        Me(
            nrn=call.principal.nrn,
            user=view(user),
            policies=[f"{p.name}@{p.scope or '*'}" for p in call.principal.policies],
            via="api_token" if call.api_token is not None else "session",
            token_id=call.api_token.id if call.api_token is not None else "",
            narrowed_by=[f"{p.name}@{p.scope or '*'}" for p in call.principal.boundary or ()],
            session_id=call.session.id if call.session is not None else "",
            csrf_token=call.session.csrf if call.session is not None else "",
        )
    )


class Simulation(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # The user to simulate: an id, or their NRN.
    principal: str
    action: str
    resource: str
    # Context keys to use (e.g. {"nexus:SourceIp": "10.0.0.1"}); the
    # principal's own attributes and the time are filled in.
    context: dict[str, Any] = {}


class SimulationResult(msgspec.Struct, kw_only=True):
    principal: str
    action: str
    resource: str
    decision: Decision


def _user_ref(state: HubState, ref: str) -> str:
    if ref.startswith("nrn:"):
        try:
            parsed = parse_nrn(ref)
        except NrnError as exc:
            raise ApiError("invalid_field", f"principal: {exc}", field="principal") from None
        if parsed.type != "user":
            raise ApiError("invalid_field", "principal: a user's id or NRN", field="principal")
        return parsed.id
    return ref


async def simulate(call: Call) -> web.Response:
    body = await call.body(Simulation)
    uid = _user_ref(call.state, body.principal)
    target = principal_of(call.state, uid)
    if target is None:
        raise ApiError("not_found", f"user {uid!r} does not exist")
    call.authorize(target.nrn)
    if body.action not in ACTIONS and not body.action.startswith("admin:"):
        raise ApiError("invalid_field", "action: admin:<resource>.<verb>", field="action")
    try:
        parse_nrn(body.resource)
    except NrnError as exc:
        raise ApiError("invalid_field", f"resource: {exc}", field="resource") from None
    ctx: dict[str, object] = dict(target.context)
    ctx["nexus:CurrentTime"] = call.now()
    ctx["nexus:EpochTime"] = int(call.now().timestamp())
    ctx.update(body.context)
    try:
        decision = decide_access(target, body.action, body.resource, ctx)
    except ValueError as exc:  # a context value of the wrong type for its key
        raise ApiError("invalid_field", f"context: {exc}", field="context") from None
    return json_response(
        SimulationResult(principal=target.nrn, action=body.action, resource=body.resource, decision=decision)
    )


class AllowedActions(msgspec.Struct, kw_only=True):
    resource: str
    actions: list[str]


async def allowed(call: Call) -> web.Response:
    # What the caller may do: the console shows only these.  It asks about
    # the caller's own rights, so it is the caller's to ask (no action).
    call.self_service()
    resource = call.query("resource")
    if not resource:
        raise ApiError("invalid_query", "resource: the NRN to ask about", field="resource")
    try:
        parse_nrn(resource)
    except NrnError as exc:
        raise ApiError("invalid_query", f"resource: {exc}", field="resource") from None
    call.resource = resource
    assert call.principal is not None
    p = call.principal
    actions = allowed_actions(p.policies, resource, call.context(), principal=p.nrn)
    if p.boundary is not None:  # an API token narrowed by a policy
        within = set(allowed_actions(p.boundary, resource, call.context(), principal=p.nrn))
        actions = [a for a in actions if a in within]
    return json_response(AllowedActions(resource=resource, actions=actions))
