"""Drift: a thing that does not converge is re-pushed at most three times,
then marked drift; it is online again by itself once its report catches up.

``assess`` decides for one thing (pure: its desired state, its report, its
sync record, a clock).  ``sync_pass`` is the periodic task: a plain async
function of the fleet's view and a clock, run by the Hub's job scheduler
on the leader only (``hub.fleet.jobs``: the ``fleet-drift`` job).

The sync record (per thing, in the KV bucket ``<PREFIX>_FLEET_SYNC``: every
replica shows the same status, and a new leader carries on the count):
which desired version is being tracked, how many re-pushes it had, when the
last signal went, and whether the thing is in drift.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import msgspec

from hub.fleet.desired import pending_keys
from hub.state import Resource
from streams.fleet_wire import Desired
from streams.snapshots import NodeReport

log = logging.getLogger("nexus.hub.fleet")

Status = Literal["enrolled", "online", "offline", "drift", "revoked"]
MISSED_BEATS = 3  # offline after three missed heartbeats


class SyncRecord(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    thing: str = ""  # its id (the KV key holds it escaped)
    version: int = 0  # the desired version being tracked
    pushes: int = 0  # re-pushes of it so far (the change signal itself is not one)
    pushed_at_ms: int = 0  # when it was last signalled
    drift: bool = False
    drift_since_ms: int = 0
    converged_at_ms: int = 0


@dataclass(frozen=True)
class Policy:
    repush_after_s: float = 10.0  # how long a signal may go unanswered
    max_repushes: int = 3


Action = Literal["track", "repush", "drift", "recovered", "converged"]


def is_offline(report: NodeReport, now_ms: int) -> bool:
    return now_ms - report.reported_at_ms > MISSED_BEATS * report.heartbeat_s * 1000


def status_of(thing: Resource, report: NodeReport | None, rec: SyncRecord | None, now_ms: int) -> Status:
    if thing.thing is not None and thing.thing.status == "revoked":
        return "revoked"
    if report is None:
        return "enrolled"
    if is_offline(report, now_ms):
        return "offline"
    if rec is not None and rec.drift:
        return "drift"
    return "online"


def assess(
    desired: Desired,
    report: NodeReport | None,
    rec: SyncRecord,
    *,
    pending: bool,
    now_ms: int,
    policy: Policy,
) -> tuple[SyncRecord, Action | None]:
    """The thing's next sync record and what to do (None: nothing).
    ``pending``: the report does not show the desired state running."""
    if not pending:
        if rec.drift:
            return SyncRecord(
                thing=desired.thing, version=desired.version, converged_at_ms=now_ms
            ), "recovered"
        if rec.version != desired.version or rec.pushes or not rec.converged_at_ms:
            return SyncRecord(
                thing=desired.thing, version=desired.version, converged_at_ms=now_ms
            ), "converged"
        return rec, None
    if rec.version != desired.version:
        # A new desired version: its change signal was the first push, and
        # the thing gets a fresh chance (drift from an older version ends).
        return SyncRecord(thing=desired.thing, version=desired.version, pushed_at_ms=now_ms), "track"
    if report is None or is_offline(report, now_ms) or rec.drift:
        # Nobody to push to (it gets the change when it connects), or the
        # re-pushes are spent: wait for its report to catch up.
        return rec, None
    if now_ms - rec.pushed_at_ms < policy.repush_after_s * 1000:
        return rec, None
    if rec.pushes < policy.max_repushes:
        return msgspec.structs.replace(rec, pushes=rec.pushes + 1, pushed_at_ms=now_ms), "repush"
    return msgspec.structs.replace(rec, drift=True, drift_since_ms=now_ms), "drift"


class FleetView(Protocol):
    """What the sync pass needs of the fleet (hub.fleet.registry.Registry)."""

    def active_things(self) -> Iterable[Resource]: ...
    def desired(self, thing: Resource) -> Desired: ...
    def report(self, thing: Resource) -> NodeReport | None: ...
    def sync_record(self, thing_id: str) -> SyncRecord: ...
    async def save_sync(self, thing_id: str, rec: SyncRecord) -> None: ...
    async def repush(self, thing_id: str, version: int, push: int) -> None: ...


@dataclass
class PassResult:
    actions: dict[str, list[str]] = field(default_factory=dict)  # action -> thing ids
    assessed: int = 0

    def of(self, action: str) -> list[str]:
        return self.actions.get(action, [])


async def sync_pass(fleet: FleetView, now_ms: int, policy: Policy | None = None) -> PassResult:
    """One pass over the fleet: every active thing assessed, its record saved
    when it changed, re-pushes sent."""
    policy = policy or Policy()
    result = PassResult()
    for thing in fleet.active_things():
        result.assessed += 1
        desired = fleet.desired(thing)
        report = fleet.report(thing)
        rec = fleet.sync_record(thing.id)
        new, action = assess(
            desired, report, rec, pending=bool(pending_keys(desired, report)), now_ms=now_ms, policy=policy
        )
        if new != rec:
            await fleet.save_sync(thing.id, new)
        if action is None:
            continue
        result.actions.setdefault(action, []).append(thing.id)
        if action == "repush":
            await fleet.repush(thing.id, desired.version, new.pushes)
        elif action in ("drift", "recovered"):
            log.info("fleet: thing %s %s (desired version %d)", thing.id, action, desired.version)
    return result
