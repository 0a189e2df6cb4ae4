"""Users, groups and policies: plain resources plus the grant ceiling.

Nobody grants more than they hold.  Every write that gives a principal a
policy is checked with ``hub.iam.grant_violations`` against the caller's
own policies: a role or policy added to a user or group, a user added to a
group (they get all of its policies), a policy created or edited (at its
org and wherever it is attached), a Deny removed (detaching or editing it
away widens rights too), and setting another user's password (taking over
an account is holding its rights).  A refusal is a 403 naming the first
thing out of reach, recorded as ``grant_ceiling`` in the audit trail.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import msgspec
from aiohttp import web

from hub.api.errors import ApiError
from hub.api.http import Call, json_response
from hub.api.resources import Kind, authorize_item, found, shown
from hub.authz import group_policies, nrn_of, org_path, policies_of
from hub.commands import Replace, SetPassword
from hub.iam import AttachedPolicy, Policy, grant_violations, managed_policy, parse_policy
from hub.signin.passwords import WeakPassword, check_strength, hash_password
from hub.state import Resource
from streams.config_hub import Attachment, GroupSpec, PolicySpec, UserSpec

_USER_FILTERS = (("org", "home org"), ("email", "exact e-mail address"))


def _doc(call: Call, policy: str, scope: str) -> Policy | None:
    """The document a (custom or managed) policy name stands for."""
    res = call.state.get("policy", policy)
    if res is not None:
        try:
            return parse_policy(res.spec.document)
        except ValueError:
            return None
    try:
        return managed_policy(policy, scope)
    except (KeyError, ValueError):
        return None


def ceiling(call: Call, grants: Iterable[tuple[Policy | None, str, Policy | None]]) -> None:
    """(granted, scope, replaces) triples; raise 403 on the first violation."""
    assert call.principal is not None
    ctx = call.context()
    p = call.principal
    for granted, scope, replaces in grants:
        if granted is None and replaces is None:
            continue
        problems = grant_violations(p.policies, granted, scope, ctx, principal=p.nrn, replaces=replaces)
        if not problems and p.boundary is not None:
            # An API token narrowed by a policy grants nothing beyond it.
            problems = grant_violations(p.boundary, granted, scope, ctx, principal=p.nrn, replaces=replaces)
        if problems:
            call.decision = None
            call.decision_label = "grant_ceiling"
            call.deciding_note = problems[0][:500]
            raise ApiError("access_denied", f"beyond your own rights: {problems[0]}")


def refuse_self_grant(call: Call, what: str) -> None:
    """A right is not copied into one its holder controls: no policy for
    oneself, no joining a group oneself (docs/iam.md)."""
    call.decision = None
    call.decision_label = "grant_ceiling"
    call.deciding_note = f"self: {what}"
    raise ApiError("access_denied", f"nobody grants themselves rights: {what}")


def _is_self(call: Call, user_id: str) -> bool:
    return call.principal is not None and call.principal.user_id == user_id


def _attachments(call: Call, spec: UserSpec | GroupSpec | None) -> set[tuple[str, str]]:
    """(policy, scope org) pairs a spec attaches, roles included."""
    if spec is None:
        return set()
    out = {(a.policy, a.org) for a in spec.policies}
    if isinstance(spec, UserSpec):
        out |= {(role, m.org) for m in spec.memberships for role in m.roles}
    else:
        out |= {(role, spec.org) for role in spec.roles}
    return out


def _grants_of_change(call: Call, before: Any, after: Any) -> list[tuple[Policy | None, str, Policy | None]]:
    old, new = _attachments(call, before), _attachments(call, after)
    grants: list[tuple[Policy | None, str, Policy | None]] = []
    for policy, org in sorted(new - old):
        scope = org_path(call.state, org)
        doc = _doc(call, policy, scope)
        if doc is None:
            continue  # an unknown policy: decide refuses it, naming the field
        grants.append((doc, scope, None))
    for policy, org in sorted(old - new):
        scope = org_path(call.state, org)
        grants.append((None, scope, _doc(call, policy, scope)))
    return grants


async def check_user(call: Call, before: Any, after: Any) -> None:
    if after is None:
        return  # a deleted user holds nothing
    if _is_self(call, after.id) and _attachments(call, after) - _attachments(call, before):
        refuse_self_grant(call, "a role or policy for your own user")
    ceiling(call, _grants_of_change(call, before, after))


def _as_grants(policies: Iterable[AttachedPolicy]) -> list[tuple[Policy | None, str, Policy | None]]:
    return [(p.document, p.scope, None) for p in policies]


async def check_group(call: Call, before: Any, after: Any) -> None:
    if after is None:
        return  # a deleted group gives nothing
    grants = _grants_of_change(call, before, after)
    added = set(after.members) - set(before.members if before is not None else ())
    assert call.principal is not None
    if call.principal.user_id in added:
        refuse_self_grant(call, "joining a group yourself")
    if call.principal.user_id in after.members and _attachments(call, after) - _attachments(call, before):
        refuse_self_grant(call, "a role or policy for a group you are in")
    if added:
        # Each new member receives every policy of the group.
        probe = Resource("group", after.id, after, 0, 0, 0, "", "")
        grants += _as_grants(group_policies(call.state, probe))
    ceiling(call, grants)


async def check_policy(call: Call, before: Any, after: Any) -> None:
    if after is None:
        # Deleting a policy detaches it everywhere: a Deny in it stops applying.
        grants = [(None, scope, _parse(before)) for scope in _attached_scopes(call, before.id)]
        ceiling(call, grants)
        return
    new = _parse(after)
    if new is None:
        return  # unparseable: decide refuses it with the field
    old = _parse(before) if before is not None else None
    scopes = {org_path(call.state, after.org)} | set(_attached_scopes(call, after.id))
    ceiling(call, [(new, scope, old) for scope in sorted(scopes)])


def _parse(spec: PolicySpec | None) -> Policy | None:
    if spec is None:
        return None
    try:
        return parse_policy(spec.document)
    except ValueError:
        return None


def _attached_scopes(call: Call, policy_id: str) -> list[str]:
    scopes: list[str] = []
    for agg in ("user", "group"):
        for r in call.state.all(agg):
            scopes += [org_path(call.state, a.org) for a in r.spec.policies if a.policy == policy_id]
    return scopes


USERS = Kind("user", "users", UserSpec, "user", _USER_FILTERS, check_user)
GROUPS = Kind("group", "groups", GroupSpec, "group", (("org", "only groups of this org"),), check_group)
POLICIES = Kind(
    "policy", "policies", PolicySpec, "policy", (("org", "only policies of this org"),), check_policy
)


# --- passwords -------------------------------------------------------------------


class NewPassword(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    password: str


async def set_password(call: Call) -> web.Response:
    body = await call.body(NewPassword)
    rid = call.request.match_info["id"]
    target = found(call, USERS, rid)
    authorize_item(call, USERS, target, "update")
    assert call.principal is not None
    if target.id != call.principal.user_id:
        # Whoever can sign in as a user holds that user's rights.
        ceiling(call, _as_grants(policies_of(call.state, target)))
    try:
        check_strength(body.password)
    except WeakPassword as exc:
        raise ApiError("invalid_field", f"password: {exc}", field="password") from None
    digest = await asyncio.to_thread(hash_password, body.password)
    call.before = {"user": rid, "has_password": bool(target.password_hash)}
    await call.execute(SetPassword(**call.envelope(), rid=rid, password_hash=digest))
    call.after = {"user": rid, "has_password": True, "version": call.config_seq}
    return web.Response(status=204, headers={"Cache-Control": "no-store"})


# --- group members ----------------------------------------------------------------


class Member(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    user: str


async def add_member(call: Call) -> web.Response:
    body = await call.body(Member)
    rid = call.request.match_info["id"]
    group = found(call, GROUPS, rid)
    authorize_item(call, GROUPS, group, "add-member")
    if body.user in group.spec.members:
        return json_response(shown(call, group), etag=group.version)
    new = msgspec.structs.replace(group.spec, members=(*group.spec.members, body.user))
    await check_group(call, group.spec, new)
    return await _save_group(call, group, new)


async def remove_member(call: Call) -> web.Response:
    rid = call.request.match_info["id"]
    user = call.request.match_info["user"]
    group = found(call, GROUPS, rid)
    authorize_item(call, GROUPS, group, "remove-member")
    if user not in group.spec.members:
        raise ApiError("not_found", f"user {user!r} is not a member of group {rid!r}")
    new = msgspec.structs.replace(group.spec, members=tuple(m for m in group.spec.members if m != user))
    return await _save_group(call, group, new)


async def _save_group(call: Call, group: Resource, new: GroupSpec) -> web.Response:
    call.before = shown(call, group)
    await call.execute(
        Replace(
            **call.envelope(expected_version=call.if_match() or group.version),
            aggregate="group",
            rid=group.id,
            spec=new,
        )
    )
    res = found(call, GROUPS, group.id)
    call.after = shown(call, res)
    return json_response(call.after, etag=res.version)


# --- attach / detach ------------------------------------------------------------------


class AttachTo(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # "user/<id>" or "group/<id>"
    principal: str
    # The org it applies at and below ("" = everywhere; only who holds it
    # everywhere can grant that).
    org: str = ""


def _principal(call: Call, ref: str) -> tuple[Kind, Resource]:
    kind_name, _, pid = ref.partition("/")
    kind = {"user": USERS, "group": GROUPS}.get(kind_name)
    if kind is None or not pid:
        raise ApiError("invalid_field", "principal: user/<id> or group/<id>", field="principal")
    return kind, found(call, kind, pid)


async def attach_policy(call: Call) -> web.Response:
    return await _attachment(call, attach=True)


async def detach_policy(call: Call) -> web.Response:
    return await _attachment(call, attach=False)


async def _attachment(call: Call, *, attach: bool) -> web.Response:
    body = await call.body(AttachTo)
    policy_id = call.request.match_info["id"]
    policy = found(call, POLICIES, policy_id)
    kind, target = _principal(call, body.principal)
    # Attaching changes the principal: the right is asked on it.
    call.authorize(
        nrn_of(call.state, kind.aggregate, target.id, target.spec),
        action="admin:policy.attach" if attach else "admin:policy.detach",
        org=target.spec.org,
    )
    link = Attachment(policy=policy.id, org=body.org)
    current = tuple(target.spec.policies)
    if attach:
        if link in current:
            return json_response(shown(call, target), etag=target.version)
        new_links = (*current, link)
    else:
        if link not in current:
            raise ApiError(
                "not_found", f"policy {policy_id!r} is not attached to {body.principal} at {body.org!r}"
            )
        new_links = tuple(a for a in current if a != link)
    new = msgspec.structs.replace(target.spec, policies=new_links)
    await (check_user if kind is USERS else check_group)(call, target.spec, new)
    call.before = shown(call, target)
    await call.execute(
        Replace(
            **call.envelope(expected_version=target.version),
            aggregate=kind.aggregate,
            rid=target.id,
            spec=new,
        )
    )
    res = found(call, kind, target.id)
    call.after = shown(call, res)
    return json_response(call.after, etag=res.version)
