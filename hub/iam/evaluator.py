"""The evaluator: the decision and why, in the shape of AWS IAM's policy
simulator (``EvaluationResult``).

Rules (AWS's, for identity policies):

- A statement applies when the action matches its Action (or is outside its
  NotAction), the resource matches its Resource (or is outside its
  NotResource), every condition holds, and the resource lies inside the scope
  its policy is attached at (a policy attached at ``acme/eu`` says nothing
  about ``acme/us`` resources, whatever its Resource patterns say).
- An applicable Deny wins over any Allow (``explicit_deny``); otherwise an
  applicable Allow allows; otherwise the answer is ``implicit_deny``.
- ``deciding`` is the first applicable Deny, else the first applicable Allow,
  in the order the policies were given and statements written; ``matched`` is
  every applicable statement; ``missing_context_keys`` are the keys that a
  statement whose action and resource matched wanted and the context lacked.

Keys the request itself implies (principal and resource id, type, org path)
are filled in from the NRNs when the caller did not pass them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from hub.iam.actions import ACTIONS
from hub.iam.conditions import Context
from hub.iam.nrn import NrnError, in_scope, org_of, parse_nrn
from hub.iam.policy import CompiledStatement, Policy


@dataclass(frozen=True, slots=True)
class AttachedPolicy:
    """A policy as it applies to one principal: attached directly or through a
    group, at an org path (``scope``; "" = global)."""

    policy_id: str
    name: str
    document: Policy
    scope: str = ""


@dataclass(frozen=True, slots=True)
class AuthzRequest:
    principal: str  # NRN of the caller
    action: str  # admin:<resource>.<verb>
    resource: str  # NRN of the target
    context: Mapping[str, object] = field(default_factory=dict)


class StatementRef(msgspec.Struct, frozen=True, kw_only=True):
    policy_id: str
    policy_name: str
    sid: str  # "" when the statement has none
    effect: Literal["Allow", "Deny"]
    index: int  # position in the policy's Statement list


Outcome = Literal["allowed", "explicit_deny", "implicit_deny"]


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    allowed: bool
    outcome: Outcome
    deciding: StatementRef | None
    matched: tuple[StatementRef, ...] = ()
    missing_context_keys: tuple[str, ...] = ()


def context_of(request: AuthzRequest) -> Context:
    """The request's context, with the keys its NRNs imply filled in."""
    ctx = Context(request.context)
    # Keys implied by the request; a caller-supplied value is kept.
    resource_parts = _nrn_parts(request.resource, "resource")
    ctx.setdefault("nexus:resourcenrn", request.resource)
    ctx.setdefault("nexus:resourceorgpath", resource_parts[0])
    ctx.setdefault("nexus:resourcetype", resource_parts[1])
    ctx.setdefault("nexus:resourceid", resource_parts[2])
    if request.principal:
        principal_parts = _nrn_parts(request.principal, "principal")
        ctx.setdefault("nexus:principalnrn", request.principal)
        ctx.setdefault("nexus:principalorgpath", principal_parts[0])
        ctx.setdefault("nexus:principaltype", principal_parts[1])
        ctx.setdefault("nexus:principalid", principal_parts[2])
    return ctx


def _nrn_parts(value: str, what: str) -> tuple[str, str, str]:
    try:
        parsed = parse_nrn(value)
    except NrnError as exc:
        raise NrnError(f"{what}: {exc}") from None
    return parsed.org_path, parsed.type, parsed.id


def _ref(attached: AttachedPolicy, stmt: CompiledStatement) -> StatementRef:
    return StatementRef(
        policy_id=attached.policy_id,
        policy_name=attached.name,
        sid=stmt.sid,
        effect="Allow" if stmt.effect == "Allow" else "Deny",
        index=stmt.index,
    )


def evaluate(policies: Sequence[AttachedPolicy], request: AuthzRequest) -> Decision:
    """The decision with its explanation.  Raises NrnError when the principal
    or resource is not an NRN (the caller's input: answer 400)."""
    ctx = context_of(request)
    resource = request.resource
    resource_org = org_of(resource)
    action = request.action
    matched: list[StatementRef] = []
    first_deny: StatementRef | None = None
    first_allow: StatementRef | None = None
    missing: dict[str, str] = {}
    raw = ctx.raw
    for attached in policies:
        scope = attached.scope
        if scope and not in_scope(resource_org, scope):
            continue
        for stmt in attached.document.statements:
            if not stmt.matches_action(action):
                continue
            on_resource = stmt.matches_resource(resource, ctx)
            if on_resource is False:
                continue
            for key, name in stmt.referenced_keys:
                if key not in raw:
                    missing[key] = name
            if on_resource is None:
                continue
            if not all(cond.test(ctx) for cond in stmt.conditions):
                continue
            ref = _ref(attached, stmt)
            matched.append(ref)
            if stmt.effect == "Deny":
                if first_deny is None:
                    first_deny = ref
            elif first_allow is None:
                first_allow = ref
    missing_keys = tuple(sorted(missing.values()))
    if first_deny is not None:
        return Decision(
            allowed=False,
            outcome="explicit_deny",
            deciding=first_deny,
            matched=tuple(matched),
            missing_context_keys=missing_keys,
        )
    if first_allow is not None:
        return Decision(
            allowed=True,
            outcome="allowed",
            deciding=first_allow,
            matched=tuple(matched),
            missing_context_keys=missing_keys,
        )
    return Decision(
        allowed=False, outcome="implicit_deny", deciding=None, matched=(), missing_context_keys=missing_keys
    )


def is_allowed(policies: Sequence[AttachedPolicy], request: AuthzRequest) -> bool:
    """The decision alone (no explanation), stopping at the first applicable Deny."""
    return _allowed(policies, request.action, request.resource, context_of(request))


def _allowed(policies: Sequence[AttachedPolicy], action: str, resource: str, ctx: Context) -> bool:
    resource_org = org_of(resource)
    allowed = False
    for attached in policies:
        scope = attached.scope
        if scope and not in_scope(resource_org, scope):
            continue
        for stmt in attached.document.statements:
            if stmt.effect == "Allow" and allowed:
                continue  # already allowed: only a Deny can change the answer
            if not stmt.matches_action(action):
                continue
            if not stmt.matches_resource(resource, ctx):
                continue
            if not all(cond.test(ctx) for cond in stmt.conditions):
                continue
            if stmt.effect == "Deny":
                return False
            allowed = True
    return allowed


def allowed_actions(
    policies: Sequence[AttachedPolicy],
    resource: str,
    context: Mapping[str, object],
    catalogue: Iterable[str] = ACTIONS,
    *,
    principal: str = "",
) -> list[str]:
    """The catalogue actions the principal may perform on ``resource``, in
    catalogue order (what the console renders).  ``principal`` fills in the
    principal's implied keys as ``evaluate`` does."""
    ctx = context_of(AuthzRequest(principal=principal, action="", resource=resource, context=context))
    resource_org = org_of(resource)
    # Whether a statement applies apart from its action does not depend on
    # the action: decide that once per statement, then sweep the catalogue.
    allows: list[CompiledStatement] = []
    denies: list[CompiledStatement] = []
    for attached in policies:
        if attached.scope and not in_scope(resource_org, attached.scope):
            continue
        for stmt in attached.document.statements:
            if stmt.matches_resource(resource, ctx) and all(cond.test(ctx) for cond in stmt.conditions):
                (allows if stmt.effect == "Allow" else denies).append(stmt)
    return [
        action
        for action in catalogue
        if any(s.matches_action(action) for s in allows) and not any(s.matches_action(action) for s in denies)
    ]
