"""The Hub's side of IAM: who a caller is (their NRN, the policies that
apply to them, their attributes), what a resource is (its NRN and
attributes), and the questions asked of ``hub.iam`` with them.

A user's policies are: the managed roles of each org membership (attached at
that org's path), the policies attached to the user, and the roles and
policies of every group the user is a member of (at the group's org, or
where the attachment says).  A disabled user has none.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hub.iam import (
    AttachedPolicy,
    AuthzRequest,
    Decision,
    evaluate,
    managed_policy,
    parse_policy,
    resource_nrn,
)
from hub.iam import org_nrn as iam_org_nrn
from hub.state import KEY, HubState, Resource
from streams.config_hub import Attachment, GroupSpec, KeySpec, UserSpec

# Aggregates whose items belong to an org (their NRN lies under its path).
_ORG_FIELD: dict[str, str] = {
    "project": "org",
    "user": "org",
    "group": "org",
    "policy": "org",
    KEY: "org",
    "credential": "org",
    "thing": "org",
    "api-token": "org",
    "identity-provider": "org",
}


def org_path(state: HubState, org: str) -> str:
    """``root/.../org`` for an org id ("" for the global scope; an unknown
    org is its own root, so a reference to it never widens a scope)."""
    if not org:
        return ""
    parts = [org]
    seen = {org}
    cur = state.get("org", org)
    while cur is not None and cur.spec.parent and cur.spec.parent not in seen:
        parts.append(cur.spec.parent)
        seen.add(cur.spec.parent)
        cur = state.get("org", cur.spec.parent)
    return "/".join(reversed(parts))


def iam_type(aggregate: str, rid: str = "") -> str:
    if aggregate == "settings":
        return "cache" if rid == "cache" else "settings"
    return aggregate


def item_org(aggregate: str, spec: Any) -> str:
    """The org an item (given by its spec) belongs to ("" = global)."""
    if aggregate == "org":
        return str(spec.parent or "")
    if aggregate == "quota":
        return str(spec.match.org or "")
    name = _ORG_FIELD.get(aggregate)
    return str(getattr(spec, name, "") or "") if name else ""


def nrn_of(state: HubState, aggregate: str, rid: str, spec: Any | None = None) -> str:
    """The NRN of an item (``spec``: its new spec, for one being created)."""
    if spec is None:
        res = state.get(aggregate, rid)
        spec = res.spec if res is not None else None
    if aggregate == "org":
        parent = org_path(state, spec.parent) if spec is not None and spec.parent else ""
        return iam_org_nrn(f"{parent}/{rid}" if parent else rid)
    org = item_org(aggregate, spec) if spec is not None else ""
    return resource_nrn(iam_type(aggregate, rid), org_path(state, org), _nrn_id(rid))


def _nrn_id(rid: str) -> str:
    # NRN ids allow letters, digits and _.@+=,- ; config ids may also hold ':'
    return rid.replace(":", "=")


def collection_nrn(state: HubState, aggregate: str, org: str = "") -> str:
    return resource_nrn(iam_type(aggregate), org_path(state, org), "*") if org else ""


def resource_context(state: HubState, aggregate: str, spec: Any) -> dict[str, object]:
    """What conditions may ask of a resource."""
    ctx: dict[str, object] = {}
    if aggregate == KEY and isinstance(spec, KeySpec):
        ctx["nexus:VirtualKeyType"] = spec.type
        ctx["nexus:ResourceOwner"] = spec.owner
        ctx["nexus:ResourceProject"] = spec.project
        ctx["nexus:RequestedModels"] = list(spec.allowed_models)
        for k, v in spec.metadata.items():
            ctx[f"nexus:ResourceTag/{k}"] = str(v)
    elif aggregate == "project":
        ctx["nexus:ResourceProject"] = spec.id
    elif aggregate == "user" and isinstance(spec, UserSpec):
        ctx["nexus:ResourceOwner"] = spec.id
        for k, v in spec.tags.items():
            ctx[f"nexus:ResourceTag/{k}"] = v
    return ctx


@dataclass(frozen=True)
class Principal:
    user_id: str
    nrn: str
    email: str
    policies: tuple[AttachedPolicy, ...]
    context: Mapping[str, object] = field(default_factory=dict)
    # An API token narrowed by a policy: a request must be allowed by the
    # user's policies *and* by these (None: not narrowed).
    boundary: tuple[AttachedPolicy, ...] | None = None


def user_nrn(state: HubState, user: Resource) -> str:
    return nrn_of(state, "user", user.id, user.spec)


def _attached(state: HubState, a: Attachment, where: str) -> AttachedPolicy | None:
    scope = org_path(state, a.org)
    res = state.get("policy", a.policy)
    if res is not None:
        try:
            doc = parse_policy(res.spec.document)
        except ValueError:
            return None  # refused when written; an old one that no longer parses grants nothing
        return AttachedPolicy(policy_id=res.id, name=res.spec.name or res.id, document=doc, scope=scope)
    try:
        return AttachedPolicy(
            policy_id=f"{a.policy}@{scope or '*'}{where}",
            name=a.policy,
            document=managed_policy(a.policy, scope),
            scope=scope,
        )
    except (KeyError, ValueError):
        return None


def role_policy(state: HubState, role: str, org: str) -> AttachedPolicy | None:
    return _attached(state, Attachment(policy=role, org=org), "")


def policies_of(state: HubState, user: Resource) -> list[AttachedPolicy]:
    spec: UserSpec = user.spec
    if spec.disabled:
        return []
    out: list[AttachedPolicy] = []
    for m in spec.memberships:
        for role in m.roles:
            p = role_policy(state, role, m.org)
            if p is not None:
                out.append(p)
    for a in spec.policies:
        p = _attached(state, a, "")
        if p is not None:
            out.append(p)
    for g in state.all("group"):
        if user.id in g.spec.members:
            out += group_policies(state, g)
    return out


def group_policies(state: HubState, group: Resource) -> list[AttachedPolicy]:
    spec: GroupSpec = group.spec
    out: list[AttachedPolicy] = []
    for role in spec.roles:
        p = _attached(state, Attachment(policy=role, org=spec.org), f" via group {group.id}")
        if p is not None:
            out.append(p)
    for a in spec.policies:
        p = _attached(state, a, f" via group {group.id}")
        if p is not None:
            out.append(p)
    return out


def principal_of(state: HubState, user_id: str) -> Principal | None:
    user = state.get("user", user_id)
    if user is None:
        return None
    spec: UserSpec = user.spec
    ctx: dict[str, object] = {
        "nexus:PrincipalType": "user",
        "nexus:PrincipalGroups": [g.id for g in state.all("group") if user_id in g.spec.members],
        "nexus:PrincipalProjects": list(spec.projects),
    }
    for k, v in spec.tags.items():
        ctx[f"nexus:PrincipalTag/{k}"] = v
    return Principal(
        user_id=user.id,
        nrn=user_nrn(state, user),
        email=spec.email,
        policies=tuple(policies_of(state, user)),
        context=ctx,
    )


def request_context(
    principal: Principal, *, source_ip: str, secure: bool, user_agent: str, now: dt.datetime
) -> dict[str, object]:
    ctx = dict(principal.context)
    if source_ip:
        ctx["nexus:SourceIp"] = source_ip
    ctx["nexus:CurrentTime"] = now
    ctx["nexus:EpochTime"] = int(now.timestamp())
    ctx["nexus:SecureTransport"] = secure
    if user_agent:
        ctx["nexus:UserAgent"] = user_agent[:256]
    return ctx


def decide_access(
    principal: Principal, action: str, resource: str, context: Mapping[str, object]
) -> Decision:
    request = AuthzRequest(principal.nrn, action, resource, context)
    decision = evaluate(principal.policies, request)
    if decision.allowed and principal.boundary is not None:
        narrowed = evaluate(principal.boundary, request)
        if not narrowed.allowed:
            return narrowed  # outside the token's policy
    return decision
