"""The Hub's control state: the fold of the CONFIG stream.

``evolve(state, event, seq)`` is pure: it returns a new state and leaves
the old one untouched (the aggregate it changes gets a fresh dict; every
other one is shared).  ``fold`` applies a run of events to a private copy in
place, which is the same computation without the per-event copy: a Hub that
starts with 100,000 events behind it must not copy its key table 100,000
times.  Both go through ``_apply``, so they cannot disagree.

An event the fold cannot use (an unknown type from a newer Hub, an
aggregate or spec this code cannot read) is counted in ``skipped`` and
changes nothing else: the Hub keeps running on what it understands.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec

from streams.config_fleet import Override
from streams.config_vault import SealedSecret
from streams.events_config import (
    AnyConfigEvent,
    ConfigEvent,
    CredentialSecretReplaced,
    CredentialStored,
    KeyIssued,
    KeyRotated,
    KeyStatusChanged,
    PasswordSet,
    ResourceCreated,
    ResourceDeleted,
    ResourceUpdated,
    ThingEnrolled,
    ThingOverrideCleared,
    ThingOverrideSet,
    ThingRevoked,
    UnknownConfigEvent,
    VaultKeyAdded,
    VaultKeyRetired,
    decode_event,
    decode_spec,
)

log = logging.getLogger("nexus.hub")

KEY = "virtual-key"
USER = "user"
THING = "thing"
THING_TEMPLATE = "thing-template"
CREDENTIAL = "credential"
VAULT_KEY = "vault-key"  # key-encryption key versions (id: the version number)


@dataclass(frozen=True, slots=True)
class KeyMaterial:
    """What a virtual key is beyond its spec: the hashes and the status."""

    hash: str
    prefix: str
    status: str  # pending | active | rejected | revoked
    previous_hash: str = ""
    previous_hash_expires_at_ms: int = 0
    status_reason: str = ""
    status_by: str = ""
    status_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class SealedMaterial:
    """A credential's secret as the Hub holds it: ciphertext only (its data
    key is wrapped in the vault bucket), a keyed fingerprint, and the last
    four characters of a long secret."""

    sealed: SealedSecret
    fingerprint: str
    last4: str
    set_at_ms: int
    set_by: str


@dataclass(frozen=True, slots=True)
class ThingMaterial:
    """What a thing is beyond its spec: its standing in the fleet, the hash
    of its sync token, and its own config overrides."""

    status: str  # active | revoked (online, offline, drift come from its reports)
    token_hash: str = ""
    how: str = "admin"  # admin | token | report
    overrides: Mapping[str, Override] = field(default_factory=dict)
    status_reason: str = ""
    status_by: str = ""
    status_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class Resource:
    aggregate: str
    id: str
    spec: Any
    # The CONFIG stream sequence of the aggregate's last event: the ETag,
    # and what Nats-Expected-Last-Subject-Sequence checks.
    version: int
    created_at_ms: int
    updated_at_ms: int
    created_by: str
    updated_by: str
    key: KeyMaterial | None = None
    password_hash: str = ""
    secret: SealedMaterial | None = None  # credentials
    thing: ThingMaterial | None = None  # things


@dataclass(frozen=True, slots=True)
class HubState:
    seq: int = 0  # the last CONFIG stream sequence folded in
    items: Mapping[str, Mapping[str, Resource]] = field(default_factory=dict)
    # (aggregate, id) -> the version of its deletion: a re-created id must
    # continue its subject's sequence.
    tombstones: Mapping[tuple[str, str], int] = field(default_factory=dict)
    # command id -> the sequence its event was stored at: a retried command
    # is answered from here instead of being decided again.
    commands: Mapping[str, int] = field(default_factory=dict)
    skipped: int = 0

    def get(self, aggregate: str, rid: str) -> Resource | None:
        return self.items.get(aggregate, {}).get(rid)

    def all(self, aggregate: str) -> Iterator[Resource]:
        return iter(self.items.get(aggregate, {}).values())

    def count(self, aggregate: str) -> int:
        return len(self.items.get(aggregate, {}))

    def version_of(self, aggregate: str, rid: str) -> int:
        """The last sequence on the aggregate's subject (0: never existed)."""
        res = self.get(aggregate, rid)
        if res is not None:
            return res.version
        return self.tombstones.get((aggregate, rid), 0)


class _Builder:
    """A mutable copy of a state, for applying events in place."""

    __slots__ = ("commands", "items", "seq", "skipped", "tombstones")

    def __init__(self, state: HubState, *, copy_all: bool) -> None:
        self.seq = state.seq
        self.items: dict[str, dict[str, Resource]] = (
            {k: dict(v) for k, v in state.items.items()} if copy_all else dict(state.items)  # type: ignore[arg-type]
        )
        self.tombstones = dict(state.tombstones)
        self.commands = dict(state.commands)
        self.skipped = state.skipped

    def freeze(self) -> HubState:
        return HubState(
            seq=self.seq,
            items=self.items,
            tombstones=self.tombstones,
            commands=self.commands,
            skipped=self.skipped,
        )


def evolve(state: HubState, event: ConfigEvent | UnknownConfigEvent, seq: int) -> HubState:
    """The state after ``event``, stored at stream sequence ``seq``."""
    b = _Builder(state, copy_all=False)
    agg = getattr(event, "aggregate", "")
    if agg in b.items:
        b.items[agg] = dict(b.items[agg])  # copy-on-write: only the changed aggregate
    _apply(b, event, seq)
    return b.freeze()


def fold(state: HubState, events: Iterable[tuple[int, bytes | AnyConfigEvent]]) -> HubState:
    """``state`` after every (sequence, event or its raw bytes) in order."""
    b = _Builder(state, copy_all=True)
    for seq, ev in events:
        _apply(b, _decoded(ev, seq), seq)
    return b.freeze()


def _decoded(ev: bytes | AnyConfigEvent, seq: int) -> ConfigEvent | UnknownConfigEvent:
    if not isinstance(ev, bytes | bytearray | memoryview):
        return ev
    try:
        return decode_event(bytes(ev))
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.warning("hub: CONFIG event at sequence %d is not readable (%s); skipped", seq, exc)
        return UnknownConfigEvent(type="undecodable")


def apply_raw(state: HubState, data: bytes, seq: int) -> HubState:
    return evolve(state, _decoded(data, seq), seq)


def _apply(b: _Builder, event: ConfigEvent | UnknownConfigEvent, seq: int) -> None:
    if seq <= b.seq:
        return  # already folded in (a redelivery, or our own write applied first)
    b.seq = seq
    if isinstance(event, UnknownConfigEvent):
        b.skipped += 1
        return
    try:
        changed = _change(b, event, seq)
    except (KeyError, msgspec.ValidationError, msgspec.DecodeError) as exc:
        log.warning(
            "hub: %s on %s/%s at sequence %d cannot be applied (%s: %s); skipped",
            type(event).__name__,
            event.aggregate,
            event.aggregate_id,
            seq,
            type(exc).__name__,
            exc,
        )
        changed = False
    if not changed:
        b.skipped += 1
        return
    if event.command_id:
        b.commands[event.command_id] = seq


def _change(b: _Builder, ev: ConfigEvent, seq: int) -> bool:
    agg, rid = ev.aggregate, ev.aggregate_id
    table = b.items.get(agg)
    current = table.get(rid) if table is not None else None
    if isinstance(ev, ResourceCreated | ResourceUpdated):
        spec = decode_spec(agg, rid, ev.spec)
        if current is None:
            res = Resource(agg, rid, spec, seq, ev.occurred_at_ms, ev.occurred_at_ms, ev.actor, ev.actor)
        else:
            res = replace(
                current, spec=spec, version=seq, updated_at_ms=ev.occurred_at_ms, updated_by=ev.actor
            )
        _put(b, res)
        return True
    if isinstance(ev, KeyIssued):
        spec = decode_spec(agg, rid, ev.spec)
        material = KeyMaterial(
            ev.hash, ev.prefix, ev.status, status_by=ev.actor, status_at_ms=ev.occurred_at_ms
        )
        _put(
            b,
            Resource(agg, rid, spec, seq, ev.occurred_at_ms, ev.occurred_at_ms, ev.actor, ev.actor, material),
        )
        return True
    if isinstance(ev, CredentialStored):
        if ev.sealed is None:
            return False
        spec = decode_spec(agg, rid, ev.spec)
        stored = SealedMaterial(ev.sealed, ev.fingerprint, ev.last4, ev.occurred_at_ms, ev.actor)
        _put(
            b,
            Resource(
                agg, rid, spec, seq, ev.occurred_at_ms, ev.occurred_at_ms, ev.actor, ev.actor, secret=stored
            ),
        )
        return True
    if isinstance(ev, ThingEnrolled):
        if current is not None:
            return False  # enrolled once; a second enrolment of the id changes nothing
        spec = decode_spec(agg, rid, ev.spec)
        thing = ThingMaterial(
            "active", token_hash=ev.token_hash, how=ev.how, status_by=ev.actor, status_at_ms=ev.occurred_at_ms
        )
        _put(
            b,
            Resource(
                agg, rid, spec, seq, ev.occurred_at_ms, ev.occurred_at_ms, ev.actor, ev.actor, thing=thing
            ),
        )
        return True
    if isinstance(ev, VaultKeyAdded):
        if ev.key is None or agg != VAULT_KEY or rid != str(ev.key.version):
            return False
        _put(b, Resource(agg, rid, ev.key, seq, ev.occurred_at_ms, ev.occurred_at_ms, ev.actor, ev.actor))
        return True
    if current is None:
        return False  # a change to something that does not exist: nothing to do
    if isinstance(ev, CredentialSecretReplaced):
        if ev.sealed is None or current.secret is None:
            return False
        fresh = SealedMaterial(ev.sealed, ev.fingerprint, ev.last4, ev.occurred_at_ms, ev.actor)
        _put(
            b,
            replace(current, secret=fresh, version=seq, updated_at_ms=ev.occurred_at_ms, updated_by=ev.actor),
        )
        return True
    if isinstance(ev, VaultKeyRetired):
        if agg != VAULT_KEY:
            return False
        spec = msgspec.structs.replace(current.spec, retired=True)
        _put(
            b, replace(current, spec=spec, version=seq, updated_at_ms=ev.occurred_at_ms, updated_by=ev.actor)
        )
        return True
    if isinstance(ev, ThingRevoked | ThingOverrideSet | ThingOverrideCleared):
        return _thing_change(b, current, ev, seq)
    if isinstance(ev, ResourceDeleted):
        assert table is not None
        del table[rid]
        b.tombstones[(agg, rid)] = seq
        return True
    if isinstance(ev, KeyRotated) and current.key is not None:
        material = replace(
            current.key,
            hash=ev.hash,
            prefix=ev.prefix,
            previous_hash=ev.previous_hash,
            previous_hash_expires_at_ms=ev.previous_hash_expires_at_ms,
        )
    elif isinstance(ev, KeyStatusChanged) and current.key is not None:
        status = "active" if ev.status == "approved" else ev.status
        material = replace(
            current.key,
            status=status,
            status_reason=ev.reason,
            status_by=ev.actor,
            status_at_ms=ev.occurred_at_ms,
        )
    elif isinstance(ev, PasswordSet):
        _put(
            b, replace(current, password_hash=ev.password_hash, version=seq, updated_at_ms=ev.occurred_at_ms)
        )
        return True
    else:
        return False
    _put(b, replace(current, key=material, version=seq, updated_at_ms=ev.occurred_at_ms, updated_by=ev.actor))
    return True


def _thing_change(
    b: _Builder, current: Resource, ev: ThingRevoked | ThingOverrideSet | ThingOverrideCleared, seq: int
) -> bool:
    thing = current.thing
    if thing is None:
        return False
    if isinstance(ev, ThingRevoked):
        thing = replace(
            thing,
            status="revoked",
            status_reason=ev.reason,
            status_by=ev.actor,
            status_at_ms=ev.occurred_at_ms,
        )
    elif isinstance(ev, ThingOverrideSet):
        overrides = dict(thing.overrides)
        overrides[ev.key] = Override(
            value=msgspec.json.decode(bytes(ev.value)),
            reason=ev.reason,
            set_by=ev.actor,
            set_at_ms=ev.occurred_at_ms,
            expires_at_ms=ev.expires_at_ms,
        )
        thing = replace(thing, overrides=overrides)
    else:
        if ev.key not in thing.overrides:
            return False
        thing = replace(thing, overrides={k: v for k, v in thing.overrides.items() if k != ev.key})
    _put(b, replace(current, thing=thing, version=seq, updated_at_ms=ev.occurred_at_ms, updated_by=ev.actor))
    return True


def _put(b: _Builder, res: Resource) -> None:
    table = b.items.get(res.aggregate)
    if table is None:
        table = b.items[res.aggregate] = {}
    table[res.id] = res
    b.tombstones.pop((res.aggregate, res.id), None)
