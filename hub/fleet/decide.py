"""Deciding the fleet's commands (called from ``hub.decide``).

Fleet changes never touch what the nodes' config compiles to, so they skip
the whole-state validation every other change goes through (an enrolment
of 200 agents must not compile the gateway config 200 times): the rules
here are all there is.

- A thing joins by enrolment only (never as a plain resource), once; a
  revoked thing stays revoked (enrol a new id).
- Overrides: a key of the config-key grammar, a reason, an expiry in the
  future (or none); a revoked thing takes none.
- Templates are plain specs (one per thing type), checked here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec

from hub.commands import Command, Create, Delete, DomainError, Replace, Upsert, conflict, invalid, not_found
from hub.fleet.commands import ClearOverride, EnrolThing, RevokeThing, SetOverride
from hub.state import THING, THING_TEMPLATE, HubState
from streams.config_fleet import THING_TYPES, ThingSpec, ThingTemplate, key_problem
from streams.events_config import (
    ConfigEvent,
    ResourceCreated,
    ResourceDeleted,
    ResourceUpdated,
    ThingEnrolled,
    ThingOverrideCleared,
    ThingOverrideSet,
    ThingRevoked,
    encode_spec,
)

Base = Callable[[Command, str, str], dict[str, Any]]

# A thing's id names an IAM resource (an NRN id) and a report key.
_THING_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+=,-]{0,127}$")
_HASH = re.compile(r"^[0-9a-f]{64}$")
MAX_VALUE_BYTES = 64 * 1024
MAX_REASON = 500
_HOW = ("admin", "token", "report")


def handles(cmd: Command) -> bool:
    if isinstance(cmd, EnrolThing | RevokeThing | SetOverride | ClearOverride):
        return True
    return isinstance(cmd, Create | Upsert | Replace | Delete) and cmd.aggregate in (THING, THING_TEMPLATE)


def _check_version(state: HubState, cmd: Command, aggregate: str, rid: str) -> None:
    if cmd.expected_version is not None:
        current = state.version_of(aggregate, rid)
        if current != cmd.expected_version:
            raise conflict(aggregate, rid, current)


def fleet_event(state: HubState, cmd: Command, base: Base) -> ConfigEvent | None:
    if isinstance(cmd, EnrolThing):
        return _enrol(state, cmd, base)
    if isinstance(cmd, RevokeThing | SetOverride | ClearOverride):
        return _change(state, cmd, base)
    if isinstance(cmd, Create | Upsert | Replace | Delete) and cmd.aggregate == THING_TEMPLATE:
        return _template(state, cmd, base)
    raise invalid("", "a thing joins by enrolment (POST /api/admin/things) and leaves by revocation")


def check_thing_id(rid: str) -> None:
    if not _THING_ID.match(rid):
        raise invalid("id", f"{rid!r} is not a valid thing id (letters, digits, _ . @ + = , -; up to 128)")


def _enrol(state: HubState, cmd: EnrolThing, base: Base) -> ConfigEvent:
    spec = cmd.spec
    if not isinstance(spec, ThingSpec):
        raise invalid("", "expected a thing spec")
    check_thing_id(spec.id)
    if spec.node_id:
        check_thing_id(spec.node_id)
    if spec.type not in THING_TYPES:
        raise invalid("type", f"{spec.type!r} is not a thing type ({', '.join(THING_TYPES)})")
    if spec.org and state.get("org", spec.org) is None:
        raise invalid("org", f"org {spec.org!r} does not exist")
    if cmd.token_hash and not _HASH.match(cmd.token_hash):
        raise invalid("token_hash", "a sha256 in hex")
    if cmd.how not in _HOW:
        raise invalid("how", f"one of {', '.join(_HOW)}")
    current = state.get(THING, spec.id)
    if current is not None:
        raise DomainError(
            409, "already_exists", f"thing {spec.id!r} is enrolled already", current_version=current.version
        )
    _check_version(state, cmd, THING, spec.id)
    if state.version_of(THING, spec.id):
        raise DomainError(409, "already_exists", f"thing id {spec.id!r} was used before; enrol a new id")
    return ThingEnrolled(
        **base(cmd, THING, spec.id), spec=encode_spec(spec), token_hash=cmd.token_hash, how=cmd.how
    )


def _reason(reason: str, *, required: bool) -> None:
    if required and not reason.strip():
        raise invalid("reason", "say why (it is shown with the override and in the audit trail)")
    if len(reason) > MAX_REASON:
        raise invalid("reason", f"at most {MAX_REASON} characters")


def _change(
    state: HubState, cmd: RevokeThing | SetOverride | ClearOverride, base: Base
) -> ConfigEvent | None:
    current = state.get(THING, cmd.rid)
    if current is None or current.thing is None:
        raise not_found(THING, cmd.rid)
    _check_version(state, cmd, THING, cmd.rid)
    thing = current.thing
    if thing.status == "revoked":
        raise DomainError(409, "invalid_transition", f"thing {cmd.rid!r} is revoked")
    if isinstance(cmd, RevokeThing):
        _reason(cmd.reason, required=False)
        return ThingRevoked(**base(cmd, THING, cmd.rid), reason=cmd.reason)
    problem = key_problem(cmd.key)
    if problem:
        raise invalid("key", problem)
    if isinstance(cmd, ClearOverride):
        _reason(cmd.reason, required=False)
        if cmd.key not in thing.overrides:
            raise DomainError(404, "not_found", f"thing {cmd.rid!r} has no override of {cmd.key!r}")
        return ThingOverrideCleared(**base(cmd, THING, cmd.rid), key=cmd.key, reason=cmd.reason)
    _reason(cmd.reason, required=True)
    if cmd.expires_at_ms and cmd.expires_at_ms <= cmd.at_ms:
        raise invalid("expires_at", "is in the past")
    raw = msgspec.json.encode(cmd.value)
    if len(raw) > MAX_VALUE_BYTES:
        raise invalid("value", f"at most {MAX_VALUE_BYTES} bytes of JSON")
    same = thing.overrides.get(cmd.key)
    if (
        same is not None
        and same.value == cmd.value
        and same.reason == cmd.reason
        and same.expires_at_ms == cmd.expires_at_ms
    ):
        return None
    return ThingOverrideSet(
        **base(cmd, THING, cmd.rid),
        key=cmd.key,
        value=msgspec.Raw(raw),
        reason=cmd.reason,
        expires_at_ms=cmd.expires_at_ms,
    )


def _template(state: HubState, cmd: Create | Upsert | Replace | Delete, base: Base) -> ConfigEvent | None:
    rid = (
        cmd.spec.type
        if isinstance(cmd, Create) and isinstance(cmd.spec, ThingTemplate)
        else getattr(cmd, "rid", "")
    )
    current = state.get(THING_TEMPLATE, rid)
    _check_version(state, cmd, THING_TEMPLATE, rid)
    if isinstance(cmd, Delete):
        if current is None:
            raise not_found(THING_TEMPLATE, rid)
        return ResourceDeleted(**base(cmd, THING_TEMPLATE, rid))
    spec = cmd.spec
    if not isinstance(spec, ThingTemplate):
        raise invalid("", "expected a thing template")
    if spec.type not in THING_TYPES:
        raise invalid("type", f"{spec.type!r} is not a thing type ({', '.join(THING_TYPES)})")
    if spec.type != rid:
        raise invalid("type", f"the template is for {spec.type!r}, the request names {rid!r}")
    for key, value in spec.keys.items():
        problem = key_problem(key)
        if problem:
            raise invalid(f"keys.{key}", problem)
        if len(msgspec.json.encode(value)) > MAX_VALUE_BYTES:
            raise invalid(f"keys.{key}", f"at most {MAX_VALUE_BYTES} bytes of JSON")
    if isinstance(cmd, Create) and current is not None:
        raise DomainError(
            409, "already_exists", f"the {rid} template exists already", current_version=current.version
        )
    if isinstance(cmd, Replace) and current is None:
        raise not_found(THING_TEMPLATE, rid)
    if current is None:
        return ResourceCreated(**base(cmd, THING_TEMPLATE, rid), spec=encode_spec(spec))
    if current.spec == spec:
        return None
    return ResourceUpdated(**base(cmd, THING_TEMPLATE, rid), spec=encode_spec(spec))
