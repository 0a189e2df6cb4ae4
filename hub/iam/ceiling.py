"""The grant ceiling: nobody grants more than they hold.

``grant_violations(grantor, granted, scope, context)`` lists what the policy
``granted``, attached at org ``scope``, would allow that the grantor may not
do themselves; empty means the grant is within the ceiling.  The Hub calls it
when a policy is created, edited or attached and when a user joins a group
(once per policy of the group, at the group's scope).  ``replaces`` is the
version an edit replaces (or a detach removes, with ``granted=None``): a Deny
that disappears lifts a restriction, so the grantor must hold what it denied.

The check is sound and conservative.  For every Allow statement of the
granted policy, and every action it matches (each catalogue action, plus
"any future action matching this wildcard"), the region of resources it
covers (its Resource or NotResource, cut to the attachment scope) must be
contained, exactly (a product of the patterns' automata), in the union of
the grantor's Allow statements that

- match the action (for a wildcard: match every action the wildcard can ever
  match),
- are no more conditional than the granted statement: each of their condition
  blocks is implied by one of the granted statement's (same key and operator,
  values no wider; ``X`` implies ``XIfExists``; a block with a policy variable
  of the grantee implies nothing),

each cut to its own attachment scope.  And no Deny of the grantor may apply
to any part of that region for that action, unless one of the granted
statement's conditions provably contradicts one of the Deny's (a value the
Deny excludes, an absent key it requires present...).  When the patterns are
too many to decide within a bound, the answer is a violation, never a pass.

So a grantor whose own rights are conditional (only from the office network)
can grant those rights only with the same condition; that is the intent:
what one grants is what one holds, in every context.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import msgspec

from hub.iam.actions import ACTIONS
from hub.iam.conditions import Condition, Context, Operator
from hub.iam.evaluator import AttachedPolicy, AuthzRequest, context_of
from hub.iam.globs import LIT, Glob
from hub.iam.languages import (
    ACTION_SHAPE,
    NRN_SHAPE,
    Conjunction,
    Constraint,
    TooComplex,
    common,
    scope_constraint,
    uncovered,
)
from hub.iam.nrn import NrnError, valid_org_path
from hub.iam.policy import CompiledStatement, Policy

# A resource that only serves to derive the grantor's keys (principal NRN) in
# the context; grant checks have no single resource.
_ANY_RESOURCE: Final = "nrn:nexus:iam::grant/check"


@dataclass(frozen=True, slots=True)
class Block:
    """One condition test with comparable values (None: cannot be compared)."""

    op: Operator
    key: str
    values: frozenset[object] | None


@dataclass(frozen=True, slots=True)
class _GrantorStatement:
    policy: AttachedPolicy
    stmt: CompiledStatement
    actions: Constraint
    resources: Constraint
    scope: Constraint | None
    blocks: tuple[Block, ...]

    def label(self) -> str:
        where = f"statement {self.stmt.sid!r}" if self.stmt.sid else f"Statement[{self.stmt.index}]"
        return f"{self.policy.name!r} {where}"


class Violation(msgspec.Struct, frozen=True, kw_only=True):
    statement: int  # index in the granted (or replaced) policy
    sid: str
    actions: tuple[str, ...]  # catalogue actions, or "any future action matching <pattern>"
    resource: str  # an example resource (a shortest one) the grantor does not hold
    reason: str

    def __str__(self) -> str:
        where = f"Statement[{self.statement}]" + (f" ({self.sid})" if self.sid else "")
        shown = ", ".join(self.actions[:4])
        if len(self.actions) > 4:
            shown += f" and {len(self.actions) - 4} more"
        return f"{where}: {shown} on {self.resource}: {self.reason}"


# -- condition blocks ---------------------------------------------------------


def _block(cond: Condition, ctx: Context | None) -> Block:
    """Comparable values; variables filled from ``ctx`` (the grantor's), or
    uncomparable without it (a grantee's variable)."""
    op = cond.op
    if op.key_type != "string":
        return Block(op, cond.key, frozenset(cond.values))
    out: list[object] = []
    for glob in cond.values:
        assert isinstance(glob, Glob)
        if glob.variables:
            if ctx is None:
                return Block(op, cond.key, None)
            filled = glob.fill(ctx.variable)
            if filled is None:
                return Block(op, cond.key, None)
            glob = filled
        if op.relation == "like":
            out.append(_merged(glob.tokens))  # wildcards and literal text stay apart
        else:
            text = _glob_text(glob)
            out.append(text.casefold() if op.relation == "ieq" else text)
    return Block(op, cond.key, frozenset(out))


def _merged(tokens: tuple[tuple[int, str], ...]) -> tuple[tuple[int, str], ...]:
    out: list[tuple[int, str]] = []
    for kind, value in tokens:
        if out and kind == LIT and out[-1][0] == LIT:
            out[-1] = (LIT, out[-1][1] + value)
        else:
            out.append((kind, value))
    return tuple(out)


def _glob_text(glob: Glob) -> str:
    return "".join(value for _kind, value in glob.tokens)


def _within(x: object, y: object, relation: str) -> bool:
    """Every context value satisfying (relation, x) satisfies (relation, y)."""
    if x == y:
        return True
    if relation == "in":
        return (
            isinstance(x, ipaddress.IPv4Network | ipaddress.IPv6Network)
            and isinstance(y, ipaddress.IPv4Network | ipaddress.IPv6Network)
            and x.version == y.version
            and x.subnet_of(y)  # type: ignore[arg-type]
        )
    if relation in ("lt", "le"):
        return bool(x <= y)  # type: ignore[operator]
    if relation in ("gt", "ge"):
        return bool(x >= y)  # type: ignore[operator]
    return False


def _implies(a: Block, g: Block) -> bool:
    """Whenever ``a`` holds, ``g`` holds."""
    if a.values is None or g.values is None or a.key != g.key:
        return False
    same = a.op.name == g.op.name
    weaker = (
        g.op.if_exists and not a.op.if_exists and a.op.base == g.op.base and a.op.qualifier == g.op.qualifier
    )
    if not (same or weaker):
        return False
    if a.op.relation == "null":
        return a.values <= g.values
    if a.op.negated:
        return all(any(_within(gv, av, a.op.relation) for av in a.values) for gv in g.values)
    return all(any(_within(av, gv, a.op.relation) for gv in g.values) for av in a.values)


def _requires_presence(a: Block) -> bool:
    op = a.op
    if op.relation == "null":
        return a.values == frozenset({False})
    return not op.negated and not op.if_exists and op.qualifier is None


def _disjoint(x: object, y: object, relation: str) -> bool:
    if relation == "in":
        return (
            isinstance(x, ipaddress.IPv4Network | ipaddress.IPv6Network)
            and isinstance(y, ipaddress.IPv4Network | ipaddress.IPv6Network)
            and not (x.version == y.version and x.overlaps(y))
        )
    return relation in ("eq", "ieq") and x != y


def _contradicts(a: Block, d: Block) -> bool:
    """``a`` holding means ``d`` cannot hold (so a Deny guarded by ``d`` never
    fires where the granted statement applies)."""
    if a.values is None or d.values is None or a.key != d.key:
        return False
    if a.op.qualifier is not None or d.op.qualifier is not None:
        return False
    if d.op.relation == "null":
        if d.values == frozenset({True}):
            return _requires_presence(a)
        if d.values == frozenset({False}):
            return a.op.relation == "null" and a.values == frozenset({True})
        return False
    if not _requires_presence(a) or a.op.relation == "null":
        return False
    if d.op.negated:
        # d: the value is none of V_d; a: the value is one of V_a, each inside V_d
        if a.op.base != d.op.base.replace("Not", "", 1):
            return False
        return all(any(_within(av, dv, a.op.relation) for dv in d.values) for av in a.values)
    if a.op.base != d.op.base or d.op.relation not in ("eq", "ieq", "in"):
        return False
    # both positive on one single value: a's values and d's cannot meet
    return all(_disjoint(av, dv, a.op.relation) for av in a.values for dv in d.values)


# -- statements as sets -------------------------------------------------------


def _action_constraint(stmt: CompiledStatement) -> Constraint:
    return Constraint(stmt.action_globs, stmt.not_action)


def _about_the_principal(cond: Condition) -> bool:
    """A test of who the grantor is (their id, org, groups, tags), answerable
    now from the grantor's own context, whatever resource is asked for."""
    resource_dependent = any(not v.startswith("nexus:principal") for v in cond.variables)
    return cond.key.startswith("nexus:principal") and not resource_dependent


def _grantor_statements(grantor: Sequence[AttachedPolicy], ctx: Context) -> list[_GrantorStatement]:
    out = []
    for attached in grantor:
        for stmt in attached.document.statements:
            resources = _resolved_resources(stmt, ctx)
            if resources is None:
                if stmt.effect == "Allow":
                    continue  # a variable without a value: this Allow never applies
                resources = Constraint(stmt.resource_globs, stmt.not_resource)  # a Deny: assume the widest
            # Tests of the grantor's identity are decided now (a statement that
            # does not apply to this grantor is dropped, a test that holds is
            # satisfied); tests of the request must be implied by the grant.
            blocks = []
            applies = True
            for cond in stmt.conditions:
                if _about_the_principal(cond):
                    applies = applies and cond.test(ctx)
                else:
                    blocks.append(_block(cond, ctx))
            if not applies:
                continue
            out.append(
                _GrantorStatement(
                    policy=attached,
                    stmt=stmt,
                    actions=_action_constraint(stmt),
                    resources=resources,
                    scope=scope_constraint(attached.scope),
                    blocks=tuple(blocks),
                )
            )
    return out


def _resolved_resources(stmt: CompiledStatement, ctx: Context) -> Constraint | None:
    globs = []
    for glob in stmt.resource_globs:
        if glob.variables and not glob.any:
            filled = glob.fill(ctx.variable)
            if filled is None:
                return None
            globs.append(filled)
        else:
            globs.append(glob)
    return Constraint(tuple(globs), stmt.not_resource)


@dataclass(frozen=True, slots=True)
class _ActionItem:
    label: str
    concrete: str | None  # a catalogue action, or None for "future actions matching"
    language: Conjunction


def _action_items(stmt: CompiledStatement, catalogue: Sequence[str]) -> list[_ActionItem]:
    items = [_ActionItem(a, a, ()) for a in catalogue if stmt.matches_action(a)]
    if not stmt.not_action:
        # a plain action outside the catalogue (a policy read with known_actions=None)
        known = set(catalogue)
        for glob in stmt.action_globs:
            text = _glob_text(glob)
            if not (glob.has_wildcard or glob.any) and text not in known:
                items.append(_ActionItem(text, text, ()))
    # Future actions: what a wildcard (or a NotAction) will also match once
    # the catalogue grows; the catalogue's own actions are checked one by one.
    future = (ACTION_SHAPE, _not_catalogued(tuple(catalogue)))
    if stmt.not_action:
        outside = ", ".join(_glob_text(g) for g in stmt.action_globs)
        items.append(
            _ActionItem(f"any future action outside {outside}", None, (*future, _action_constraint(stmt)))
        )
    else:
        for glob in stmt.action_globs:
            if glob.has_wildcard or glob.any:
                label = f"any future action matching {_glob_text(glob)}"
                items.append(_ActionItem(label, None, (*future, Constraint((glob,)))))
    return items


@functools.lru_cache(maxsize=8)
def _not_catalogued(catalogue: tuple[str, ...]) -> Constraint:
    return Constraint((), negated=True, words=frozenset(catalogue))


def _matches(g: _GrantorStatement, item: _ActionItem) -> bool:
    """``g`` matches every action of ``item``."""
    if item.concrete is not None:
        return g.stmt.matches_action(item.concrete)
    return uncovered(item.language, [(g.actions,)]) is None


def _may_match(d: _GrantorStatement, item: _ActionItem) -> bool:
    """``d`` matches some action of ``item``."""
    if item.concrete is not None:
        return d.stmt.matches_action(item.concrete)
    return common((*item.language, d.actions)) is not None


def _own_deny_covers(own: _OwnDeny, item: _ActionItem) -> bool:
    """The granted policy's own Deny matches every action of ``item``."""
    if item.concrete is not None:
        return own.stmt.matches_action(item.concrete)
    return uncovered(item.language, [(own.actions,)]) is None


def _member(g: _GrantorStatement) -> Conjunction:
    return (g.resources,) if g.scope is None else (g.resources, g.scope)


@dataclass(frozen=True, slots=True)
class _OwnDeny:
    """An unconditional Deny of the granted policy itself: it binds whoever
    holds the policy, so what it denies is not granted."""

    actions: Constraint
    stmt: CompiledStatement
    carve: Constraint  # the resources it leaves


def _own_denies(policy: Policy | None) -> list[_OwnDeny]:
    if policy is None:
        return []
    out = []
    for stmt in policy.statements:
        if stmt.effect != "Deny" or stmt.conditions or stmt.resource_vars:
            continue  # a conditional Deny may not fire; one with variables names no fixed set
        out.append(
            _OwnDeny(_action_constraint(stmt), stmt, Constraint(stmt.resource_globs, not stmt.not_resource))
        )
    return out


def _check_statement(
    index: int,
    stmt: CompiledStatement,
    scope: str,
    grantors: list[_GrantorStatement],
    catalogue: Sequence[str],
    own_denies: list[_OwnDeny],
    why: str = "",
) -> list[Violation]:
    granted_blocks = [_block(c, None) for c in stmt.conditions]
    # the grantee's variables in a pattern stand for any text inside one part
    region: list[Constraint] = [NRN_SHAPE, Constraint(stmt.resource_globs, stmt.not_resource)]
    scoped = scope_constraint(scope)
    if scoped is not None:
        region.append(scoped)
    region_t = tuple(region)
    allows = [
        g
        for g in grantors
        if g.stmt.effect == "Allow" and all(any(_implies(a, b) for a in granted_blocks) for b in g.blocks)
    ]
    denies = [
        d
        for d in grantors
        if d.stmt.effect == "Deny" and not any(_contradicts(a, b) for a in granted_blocks for b in d.blocks)
    ]
    decided: dict[tuple[tuple[int, ...], ...], tuple[str, str] | None] = {}
    # (example resource, reason) -> the actions it applies to, in catalogue order
    grouped: dict[tuple[str, str], list[str]] = {}
    for item in _action_items(stmt, catalogue):
        usable = tuple(i for i, g in enumerate(allows) if _matches(g, item))
        relevant = tuple(i for i, d in enumerate(denies) if _may_match(d, item))
        carved = tuple(i for i, own in enumerate(own_denies) if _own_deny_covers(own, item))
        key = (usable, relevant, carved)
        if key not in decided:
            item_region = region_t + tuple(own_denies[i].carve for i in carved)
            decided[key] = _region_problem(
                item_region, [allows[i] for i in usable], [denies[i] for i in relevant]
            )
        problem = decided[key]
        if problem is not None:
            grouped.setdefault(problem, []).append(item.label)
    return [
        Violation(
            statement=index, sid=stmt.sid, actions=tuple(actions), resource=resource, reason=why + reason
        )
        for (resource, reason), actions in grouped.items()
    ]


def _region_problem(
    region: Conjunction, allows: list[_GrantorStatement], denies: list[_GrantorStatement]
) -> tuple[str, str] | None:
    """(an example resource, why) when the grantor does not hold the region."""
    try:
        gap = uncovered(region, [_member(g) for g in allows])
        if gap is not None:
            return gap, "you may not do this yourself"
        for d in denies:
            hit = common((*region, *_member(d)))
            if hit is not None:
                return hit, f"denied to you by {d.label()}"
    except TooComplex:
        return "(its resources)", "too complex to prove within your rights; narrow the patterns"
    return None


def grant_violations(
    grantor: Sequence[AttachedPolicy],
    granted: Policy | None,
    scope: str,
    context: Mapping[str, object],
    *,
    principal: str = "",
    replaces: Policy | None = None,
    catalogue: Iterable[str] = ACTIONS,
) -> list[str]:
    """What ``granted`` (attached at ``scope``) would allow beyond the
    grantor's own rights, one line each; empty: within the ceiling.

    ``principal`` and ``context`` are the grantor's (their ``${...}``
    variables are filled from them).  ``replaces``: the version an edit
    replaces, or the policy a detach removes (``granted=None``)."""
    return [
        str(v)
        for v in find_violations(
            grantor, granted, scope, context, principal=principal, replaces=replaces, catalogue=catalogue
        )
    ]


def find_violations(
    grantor: Sequence[AttachedPolicy],
    granted: Policy | None,
    scope: str,
    context: Mapping[str, object],
    *,
    principal: str = "",
    replaces: Policy | None = None,
    catalogue: Iterable[str] = ACTIONS,
) -> list[Violation]:
    """``grant_violations`` as structured records."""
    if not valid_org_path(scope):
        raise NrnError(f"org path {scope!r} is not valid")
    ctx = context_of(AuthzRequest(principal=principal, action="", resource=_ANY_RESOURCE, context=context))
    for key in ("nexus:resourcenrn", "nexus:resourceorgpath", "nexus:resourcetype", "nexus:resourceid"):
        ctx.raw.pop(key, None)  # not about one resource
    actions = tuple(catalogue)
    grantors = _grantor_statements(grantor, ctx)
    own = _own_denies(granted)
    violations: list[Violation] = []
    if granted is not None:
        for stmt in granted.statements:
            if stmt.effect == "Allow":
                violations.extend(_check_statement(stmt.index, stmt, scope, grantors, actions, own))
    if replaces is not None:
        kept = {_fingerprint(s) for s in granted.statement_documents()} if granted is not None else set()
        old_docs = replaces.statement_documents()
        for stmt in replaces.statements:
            if stmt.effect == "Deny" and _fingerprint(old_docs[stmt.index]) not in kept:
                violations.extend(
                    _check_statement(
                        stmt.index,
                        stmt,
                        scope,
                        grantors,
                        actions,
                        own,
                        why="removing this Deny lifts it, but ",
                    )
                )
    return violations


def _fingerprint(doc: object) -> bytes:
    built = msgspec.to_builtins(doc)
    if isinstance(built, dict):
        built.pop("Sid", None)
    return msgspec.json.encode(built, order="sorted")
