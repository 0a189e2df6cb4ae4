"""decide(state, command) -> the event it produces (or None: nothing to
change), or a DomainError saying why not.  Pure: no clock, no randomness,
no I/O; what a command needs of those it carries.

A change is accepted when the state it produces is valid as a whole
(``hub.validate``).  A state that was already invalid (a rule tightened by
an upgrade, an import from a looser era) does not freeze the Hub: a change
is refused only for a problem it introduces.
"""

from __future__ import annotations

from typing import Any

from hub.commands import (
    ChangeKeyStatus,
    Command,
    Create,
    Delete,
    DomainError,
    IssueKey,
    Replace,
    RotateKey,
    SetPassword,
    Upsert,
    conflict,
    invalid,
    not_found,
)
from hub.fleet import decide as fleet_decide
from hub.signin import tokens
from hub.state import KEY, USER, HubState, evolve
from hub.validate import Problem, check_id, first_problem, references
from hub.vault import decide as vault_decide
from streams.config_hub import KeySpec
from streams.events_config import (
    HUB_SETTINGS_SECTIONS,
    SETTINGS_LISTS,
    SETTINGS_SECTIONS,
    SPEC_TYPES,
    ConfigEvent,
    KeyIssued,
    KeyRotated,
    KeyStatusChanged,
    PasswordSet,
    ResourceCreated,
    ResourceDeleted,
    ResourceUpdated,
    encode_spec,
)

_KEY_TRANSITIONS: dict[str, frozenset[str]] = {
    # status change -> the statuses it may come from
    "approved": frozenset({"pending"}),
    "rejected": frozenset({"pending"}),
    "revoked": frozenset({"pending", "active"}),
    # the key-expiry job: an active key whose expires_at has passed
    "expired": frozenset({"active"}),
}
_KEY_FIXED = ("org", "type", "owner")


def spec_id(aggregate: str, spec: Any) -> str:
    """The id an aggregate's spec carries (``name`` for providers, models,
    routing rules and SIEM sinks; ``model`` for prices)."""
    if aggregate == "price":
        return str(spec.model)
    if aggregate == "thing-template":
        return str(spec.type)
    for attr in ("id", "name"):
        value = getattr(spec, attr, None)
        if isinstance(value, str):
            return value
    raise KeyError(aggregate)


def decide(state: HubState, cmd: Command) -> ConfigEvent | None:
    if fleet_decide.handles(cmd):
        # Fleet changes never touch what nodes' config compiles to: their
        # own rules are all there is (hub.fleet.decide).
        return fleet_decide.fleet_event(state, cmd, _base)
    event = _event(state, cmd)
    if event is None:
        return None
    after = evolve(state, event, state.seq + 1)
    problem = first_problem(after)
    if problem is not None and problem != first_problem(state):
        raise _refusal(problem, event.aggregate, event.aggregate_id)
    return event


def _refusal(p: Problem, aggregate: str, rid: str) -> DomainError:
    if (p.aggregate, p.rid) == (aggregate, rid) or not p.aggregate:
        return invalid(p.field, p.message)
    # The change breaks another item: e.g. deleting a model a key may call.
    return DomainError(
        409,
        "in_use",
        f"{aggregate} {rid!r}: the change would break {p.aggregate} {p.rid!r} ({p})",
    )


def _base(cmd: Command, aggregate: str, rid: str) -> dict[str, Any]:
    return {
        "command_id": cmd.id,
        "request_id": cmd.request_id,
        "actor": cmd.actor,
        "occurred_at_ms": cmd.at_ms,
        "aggregate": aggregate,
        "aggregate_id": rid,
    }


def _check_version(state: HubState, cmd: Command, aggregate: str, rid: str) -> None:
    if cmd.expected_version is not None:
        current = state.version_of(aggregate, rid)
        if current != cmd.expected_version:
            raise conflict(aggregate, rid, current)


def _check_spec(aggregate: str, rid: str, spec: Any) -> None:
    expected = (
        SETTINGS_SECTIONS.get(rid) or HUB_SETTINGS_SECTIONS.get(rid)
        if aggregate == "settings"
        else SPEC_TYPES.get(aggregate)
    )
    if expected is None:
        raise DomainError(404, "not_found", f"no such resource type {aggregate!r}")
    if not isinstance(spec, _runtime_types(expected)):
        raise invalid("", f"expected a {aggregate} spec")
    if aggregate == "settings":
        for name in SETTINGS_LISTS.get(rid, ()):
            if getattr(spec, name):
                raise invalid(name, f"set through its own resource, not the {rid} settings")
        return
    if spec_id(aggregate, spec) != rid:
        raise invalid("id", f"the spec names {spec_id(aggregate, spec)!r}, the request {rid!r}")
    try:
        check_id(aggregate, rid)
    except Problem as p:
        raise invalid(p.field, p.message) from None


def _runtime_types(t: Any) -> tuple[type, ...]:
    args = getattr(t, "__args__", None)
    return tuple(args) if args else (t,)


def _event(state: HubState, cmd: Command) -> ConfigEvent | None:
    if vault_decide.handles(cmd):
        return vault_decide.vault_event(state, cmd, _base)
    if tokens.handles(cmd):
        return tokens.token_event(state, cmd, _base)
    if getattr(cmd, "aggregate", "") == tokens.API_TOKEN:
        raise invalid("", "tokens are issued and revoked, not edited as plain resources")
    if isinstance(cmd, Replace) and cmd.aggregate == KEY:
        return _edit_key(state, cmd)
    if isinstance(cmd, Create | Upsert | Replace):
        rid = spec_id(cmd.aggregate, cmd.spec) if isinstance(cmd, Create) else cmd.rid
        if cmd.aggregate == KEY:
            raise invalid("", "virtual keys are issued (IssueKey), not created as plain resources")
        _check_spec(cmd.aggregate, rid, cmd.spec)
        _check_version(state, cmd, cmd.aggregate, rid)
        current = state.get(cmd.aggregate, rid)
        if isinstance(cmd, Create) and current is not None:
            raise DomainError(
                409,
                "already_exists",
                f"{cmd.aggregate} {rid!r} already exists",
                current_version=current.version,
            )
        if isinstance(cmd, Replace) and current is None:
            raise not_found(cmd.aggregate, rid)
        base = _base(cmd, cmd.aggregate, rid)
        if current is None:
            return ResourceCreated(**base, spec=encode_spec(cmd.spec))
        if current.spec == cmd.spec:
            return None  # nothing changes: no event, no new version
        return ResourceUpdated(**base, spec=encode_spec(cmd.spec))
    if isinstance(cmd, Delete):
        current = state.get(cmd.aggregate, cmd.rid)
        if current is None:
            raise not_found(cmd.aggregate, cmd.rid)
        _check_version(state, cmd, cmd.aggregate, cmd.rid)
        refs = references(state, cmd.aggregate, cmd.rid)
        if refs:
            raise DomainError(
                409, "in_use", f"{cmd.aggregate} {cmd.rid!r} is still referenced by {', '.join(refs[:5])}"
            )
        return ResourceDeleted(**_base(cmd, cmd.aggregate, cmd.rid))
    if isinstance(cmd, IssueKey):
        return _issue_key(state, cmd)
    if isinstance(cmd, RotateKey | ChangeKeyStatus):
        current = state.get(KEY, cmd.rid)
        if current is None or current.key is None:
            raise not_found(KEY, cmd.rid)
        _check_version(state, cmd, KEY, cmd.rid)
        status = current.key.status
        if isinstance(cmd, RotateKey):
            if status != "active":
                raise DomainError(409, "invalid_transition", f"a {status} key cannot be rotated")
            grace = cmd.grace_until_ms if cmd.grace_until_ms > cmd.at_ms else 0
            return KeyRotated(
                **_base(cmd, KEY, cmd.rid),
                hash=cmd.hash,
                prefix=cmd.prefix,
                previous_hash=current.key.hash if grace else "",
                previous_hash_expires_at_ms=grace,
            )
        allowed_from = _KEY_TRANSITIONS.get(cmd.status)
        if allowed_from is None:
            raise invalid("status", f"{cmd.status!r} is not approved, rejected, revoked or expired")
        if status not in allowed_from:
            raise DomainError(409, "invalid_transition", f"a {status} key cannot be {cmd.status}")
        if cmd.status == "expired":
            expires = current.spec.expires_at
            if expires is None or expires.timestamp() * 1000 > cmd.at_ms:
                raise DomainError(409, "invalid_transition", "the key has not reached its expires_at")
        return KeyStatusChanged(**_base(cmd, KEY, cmd.rid), status=cmd.status, reason=cmd.reason)
    if isinstance(cmd, SetPassword):
        if state.get(USER, cmd.rid) is None:
            raise not_found(USER, cmd.rid)
        _check_version(state, cmd, USER, cmd.rid)
        return PasswordSet(**_base(cmd, USER, cmd.rid), password_hash=cmd.password_hash)
    raise TypeError(f"unknown command {type(cmd).__name__}")


def _issue_key(state: HubState, cmd: IssueKey) -> ConfigEvent:
    spec: KeySpec = cmd.spec
    if not isinstance(spec, KeySpec):
        raise invalid("", "expected a virtual key spec")
    try:
        check_id(KEY, spec.id)
    except Problem as p:
        raise invalid(p.field, p.message) from None
    if state.get(KEY, spec.id) is not None:
        raise DomainError(409, "already_exists", f"virtual key {spec.id!r} already exists")
    if cmd.status not in ("active", "pending", "rejected", "revoked"):
        raise invalid("status", f"{cmd.status!r} is not a key status")
    if (
        spec.expires_at is not None
        and spec.expires_at.timestamp() * 1000 <= cmd.at_ms
        and cmd.status != "revoked"
    ):
        raise invalid("expires_at", "is in the past")
    _check_version(state, cmd, KEY, spec.id)
    return KeyIssued(
        **_base(cmd, KEY, spec.id),
        spec=encode_spec(spec),
        hash=cmd.hash,
        prefix=cmd.prefix,
        status=cmd.status,
    )


def _edit_key(state: HubState, cmd: Replace) -> ConfigEvent | None:
    """An edit of a key's spec (model scope, expiry, limits, description);
    its org, type and owner are fixed at issue: moving a key to another org
    would take it out of the policies that governed its creation."""
    current = state.get(KEY, cmd.rid)
    if current is None:
        raise not_found(KEY, cmd.rid)
    _check_version(state, cmd, KEY, cmd.rid)
    if not isinstance(cmd.spec, KeySpec):
        raise invalid("", "expected a virtual key spec")
    if cmd.spec.id != cmd.rid:
        raise invalid("id", f"the spec names {cmd.spec.id!r}, the request {cmd.rid!r}")
    for name in _KEY_FIXED:
        if getattr(cmd.spec, name) != getattr(current.spec, name):
            raise invalid(name, "cannot change once the key exists (issue a new key)")
    if current.spec == cmd.spec:
        return None
    return ResourceUpdated(**_base(cmd, KEY, cmd.rid), spec=encode_spec(cmd.spec))
