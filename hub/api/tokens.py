"""Admin API tokens (a user's own: auth/tokens; an admin's view of a user's:
users/{id}/tokens) and SCIM tokens (scim-tokens, one org each).

A token is in the answer that issues it and nowhere else.  An admin token
acts as its user with the rights the user holds at each request (never
more; fewer when it names a policy to narrow it to) and is issued only
from a signed-in session: a token cannot mint a token, so a narrowed token
cannot widen itself.  Every token expires (at most the signin settings'
``api_token_max_days``); lists show its prefix and status, never a hash.
"""

from __future__ import annotations

import datetime as dt
import secrets

import msgspec
from aiohttp import web

from hub.api.errors import ApiError
from hub.api.http import Call, json_response
from hub.api.resources import authorize_item, found, shown
from hub.api.signin import signin_settings
from hub.authz import nrn_of, org_path, role_policy
from hub.iam import resource_nrn
from hub.signin.tokens import API_TOKEN, IssueToken, RevokeToken, display_prefix, new_token, token_hash
from hub.state import Resource
from hub.views import Item
from streams.config_base import ConfigError
from streams.config_hub import ApiTokenSpec


class NewToken(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    description: str = ""
    # Days until it expires (at most the signin settings' api_token_max_days).
    expires_in_days: int = 90
    # Narrow the token to a policy: a custom policy's id or a managed
    # policy's name (NexusViewer...), applying at policy_org and below.
    policy: str = ""
    policy_org: str = ""


class NewScimToken(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    org: str
    description: str = ""
    expires_in_days: int = 365


class IssuedToken(msgspec.Struct, kw_only=True):
    """The token appears here once; only its keyed hash is stored."""

    token: str
    item: Item[ApiTokenSpec]


class TokenList(msgspec.Struct, kw_only=True):
    items: list[Item[ApiTokenSpec]]


def _secret(call: Call) -> bytes:
    try:
        return call.hub.hmac_secret(call.state)
    except ConfigError as exc:
        raise ApiError("unavailable", f"tokens cannot be issued: {exc}") from None


def _expiry(call: Call, days: int) -> dt.datetime:
    most = signin_settings(call.state).api_token_max_days
    if not 1 <= days <= most:
        raise ApiError(
            "invalid_field", f"expires_in_days: from 1 to {most} (signin settings)", field="expires_in_days"
        )
    return (call.now() + dt.timedelta(days=days)).replace(microsecond=0)


def token_nrn(call: Call, res: Resource | None = None, *, spec: ApiTokenSpec | None = None) -> str:
    spec = spec if spec is not None else res.spec if res is not None else None
    assert spec is not None
    if spec.kind == "scim":
        return resource_nrn("scim-token", org_path(call.state, spec.org), spec.id)
    user = call.state.get("user", spec.user)
    return nrn_of(call.state, "user", spec.user, user.spec if user is not None else None)


async def _issue(call: Call, spec: ApiTokenSpec) -> web.Response:
    token = new_token(spec.kind)
    await call.execute(
        IssueToken(
            **call.envelope(), spec=spec, hash=token_hash(token, _secret(call)), prefix=display_prefix(token)
        )
    )
    res = call.state.get(API_TOKEN, spec.id)
    assert res is not None
    call.after = shown(call, res)
    return json_response(IssuedToken(token=token, item=call.after), status=201, etag=res.version)


def _listed(call: Call, **match: str) -> TokenList:
    items = [
        shown(call, r)
        for r in sorted(call.state.all(API_TOKEN), key=lambda r: r.created_at_ms)
        if all(getattr(r.spec, k) == v for k, v in match.items())
    ]
    return TokenList(items=items)


async def _revoke(call: Call, res: Resource) -> web.Response:
    call.before = shown(call, res)
    if res.key is not None and res.key.status == "active":
        await call.execute(RevokeToken(**call.envelope(), rid=res.id, reason="revoked through the API"))
    fresh = call.state.get(API_TOKEN, res.id)
    call.after = shown(call, fresh) if fresh is not None else None
    return web.Response(status=204, headers={"Cache-Control": "no-store"})


# --- a user's own tokens --------------------------------------------------------------


async def create_my_token(call: Call) -> web.Response:
    body = await call.body(NewToken)
    call.action = "auth:token.create"
    assert call.principal is not None
    if call.api_token is not None:
        call.self_service("token_from_token")
        raise ApiError("access_denied", "an API token cannot issue tokens: sign in to create one")
    call.self_service()
    if body.policy and role_policy(call.state, body.policy, body.policy_org) is None:
        raise ApiError(
            "invalid_field",
            f"policy: {body.policy[:64]!r} is neither a policy's id nor a managed policy",
            field="policy",
        )
    user = call.state.get("user", call.principal.user_id)
    assert user is not None
    spec = ApiTokenSpec(
        id=f"tok_{secrets.token_hex(8)}",
        kind="admin",
        user=user.id,
        org=user.spec.org,
        description=body.description[:256],
        expires_at=_expiry(call, body.expires_in_days),
        policy=body.policy,
        policy_org=body.policy_org,
    )
    call.resource = call.principal.nrn
    return await _issue(call, spec)


async def my_tokens(call: Call) -> web.Response:
    call.self_service()
    assert call.principal is not None
    return json_response(_listed(call, kind="admin", user=call.principal.user_id))


async def revoke_my_token(call: Call) -> web.Response:
    call.action = "auth:token.revoke"
    call.self_service()
    assert call.principal is not None
    res = call.state.get(API_TOKEN, call.request.match_info["tid"])
    if res is None or res.spec.kind != "admin" or res.spec.user != call.principal.user_id:
        raise ApiError("not_found", "you have no such token")
    call.resource = call.principal.nrn
    return await _revoke(call, res)


# --- an admin's view of a user's tokens ----------------------------------------------------


def _user(call: Call, verb: str) -> Resource:
    from hub.api.identity import USERS

    user = found(call, USERS, call.request.match_info["id"])
    authorize_item(call, USERS, user, verb)
    return user


async def user_tokens(call: Call) -> web.Response:
    user = _user(call, "read")
    return json_response(_listed(call, kind="admin", user=user.id))


async def revoke_user_token(call: Call) -> web.Response:
    user = _user(call, "revoke-sessions")
    res = call.state.get(API_TOKEN, call.request.match_info["tid"])
    if res is None or res.spec.kind != "admin" or res.spec.user != user.id:
        raise ApiError("not_found", f"user {user.id!r} has no such token")
    return await _revoke(call, res)


# --- SCIM tokens --------------------------------------------------------------------


async def list_scim_tokens(call: Call) -> web.Response:
    call.self_service("filtered")
    org = call.query("org")
    items = [
        shown(call, r)
        for r in sorted(call.state.all(API_TOKEN), key=lambda r: r.created_at_ms)
        if r.spec.kind == "scim"
        and (not org or r.spec.org == org)
        and call.allowed(token_nrn(call, r), action="admin:scim-token.read")
    ]
    return json_response(TokenList(items=items))


async def create_scim_token(call: Call) -> web.Response:
    body = await call.body(NewScimToken)
    if call.state.get("org", body.org) is None:
        raise ApiError("invalid_field", f"org: unknown org {body.org[:64]!r}", field="org")
    spec = ApiTokenSpec(
        id=f"scim_{secrets.token_hex(8)}",
        kind="scim",
        org=body.org,
        description=body.description[:256],
        expires_at=_expiry(call, body.expires_in_days),
    )
    call.authorize(token_nrn(call, spec=spec), org=body.org)
    return await _issue(call, spec)


async def revoke_scim_token(call: Call) -> web.Response:
    res = call.state.get(API_TOKEN, call.request.match_info["id"])
    if res is None or res.spec.kind != "scim":
        raise ApiError("not_found", "no such SCIM token")
    call.authorize(token_nrn(call, res), org=res.spec.org)
    return await _revoke(call, res)
