"""The fleet at run time: who is enrolled (the control state), what each
thing reports (the node report bucket), where its sync stands (the sync
bucket), and the change signals to the things connected to this Hub.

Where each part lives, and why:

- Enrolment, revocation, overrides and templates are admin changes: CONFIG
  events, folded into the state like every other (``hub.fleet.decide``).
- Reports and heartbeats are high-rate and only the latest one matters:
  the KV bucket ``<PREFIX>_NODES`` (one key per node, a short history),
  where nodes inside the NATS trust boundary already write their
  ``NodeReport``.  Things that speak the sync protocol have theirs written
  by the Hub they talk to.  Every replica watches the bucket.
- Sync records (re-pushes, drift) change a few times per desired version:
  the KV bucket ``<PREFIX>_FLEET_SYNC``, watched by every replica, which is
  also how a re-push decided on one replica reaches a thing connected to
  another: the signal a thing gets is (desired version, re-pushes), both
  computed from what every replica holds.

A node inside the NATS trust boundary that reports and is not enrolled yet
(a gateway, a processor, the Hub itself) is enrolled by its first report
(``how: report``); a thing outside it (an agent) joins through
``hub.fleet.enrol``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgspec
import nats.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.errors import Error as JetStreamError
from nats.js.kv import KeyValue
from prometheus_client import Counter, Gauge

from hub.commands import DomainError
from hub.control import ControlPlane
from hub.fleet.commands import EnrolThing
from hub.fleet.decide import check_thing_id
from hub.fleet.desired import desired_of, pending_keys, report_key_of
from hub.fleet.drift import Policy, Status, SyncRecord, status_of
from hub.state import THING, THING_TEMPLATE, HubState, Resource
from streams.config_fleet import SNAPSHOT_TYPES, THING_TYPES, Override, ThingSpec
from streams.fleet_wire import Desired, Pushed, Report, Signal, desired_key
from streams.snapshots import NodeReport, SnapshotHead, report_bucket, report_decoder, report_key
from streams.tasks import stop_tasks
from streams.topology import Topology

log = logging.getLogger("nexus.hub.fleet")

REGISTRY_ACTOR = "system:registry"

REPORTS = Counter("nexus_fleet_reports_total", "Reports the Hub received from things", ["transport"])
REPUSHES = Counter("nexus_fleet_repushes_total", "Desired state re-pushed to a thing that did not converge")
DRIFTED = Counter("nexus_fleet_drift_total", "Things marked drift")
CONNECTED = Gauge("nexus_fleet_connected", "Things connected to this Hub (WebSocket or long poll)")

_sync_decoder = msgspec.json.Decoder(SyncRecord)
_encode = msgspec.json.Encoder().encode


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Subscription:
    """One connection of a thing waiting for signals."""

    def __init__(self, thing_id: str) -> None:
        self.thing_id = thing_id
        self.wake = asyncio.Event()


async def _bucket(js: JetStreamContext, name: str) -> KeyValue:
    try:
        return await js.key_value(name)
    except (BucketNotFoundError, NotFoundError):
        pass
    with contextlib.suppress(JetStreamError):  # another replica made it first
        return await js.create_key_value(KeyValueConfig(bucket=name, history=1, storage=StorageType.FILE))
    return await js.key_value(name)


class Registry:
    def __init__(
        self,
        control: ControlPlane,
        js: JetStreamContext,
        topology: Topology,
        *,
        head: Callable[[], SnapshotHead | None],
        policy: Policy | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.control = control
        self._js = js
        self.topology = topology
        self._head = head
        self.policy = policy or Policy()
        self.clock = clock
        self._reports: dict[str, NodeReport] = {}  # report key -> latest
        self._sync: dict[str, SyncRecord] = {}  # thing id -> record
        self._subs: dict[str, set[Subscription]] = {}
        self._desired: dict[str, tuple[tuple[int, int, int], Desired]] = {}
        self._index: tuple[Any, dict[str, str], dict[str, str]] | None = None
        self._enrolling: set[str] = set()
        self._touched: dict[str, int] = {}
        self._pushed: dict[str, tuple[int, int]] = {}  # NATS node -> (version, push) written
        self._pushing: asyncio.Task[None] | None = None
        self._push_wanted = False
        self._reports_kv: KeyValue | None = None
        self._sync_kv: KeyValue | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    # --- life -------------------------------------------------------------------

    async def start(self) -> None:
        self._reports_kv = await report_bucket(self._js, self.topology)
        self._sync_kv = await _bucket(self._js, self.topology.fleet_sync_bucket)
        ready = [asyncio.Event(), asyncio.Event()]
        self._tasks = [
            asyncio.create_task(
                self._watch(self._reports_kv, self._on_report, ready[0]), name="fleet-reports"
            ),
            asyncio.create_task(self._watch(self._sync_kv, self._on_sync, ready[1]), name="fleet-sync"),
        ]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await asyncio.gather(*(e.wait() for e in ready))
        self.control.on_change(lambda _: self.wake_all())
        self.wake_all()

    async def stop(self) -> None:
        self._stopping.set()
        if self._pushing is not None:
            self._tasks.append(self._pushing)
        with contextlib.suppress(Exception):
            await stop_tasks(*self._tasks, within_s=5)
        self._tasks = []
        for subs in self._subs.values():
            for sub in subs:
                sub.wake.set()

    async def _watch(self, kv: KeyValue, apply: Callable[[str, bytes], None], ready: asyncio.Event) -> None:
        while not self._stopping.is_set():
            watcher = None
            try:
                watcher = await kv.watchall()
                while not self._stopping.is_set():
                    try:
                        entry = await watcher.updates(timeout=5.0)  # type: ignore[no-untyped-call]
                    except nats.errors.TimeoutError:
                        continue
                    if entry is None:
                        ready.set()  # the initial values are in
                        continue
                    if entry.value and entry.operation is None:
                        apply(entry.key, entry.value)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("fleet: watching %s failed (%s); retrying", kv._name, type(exc).__name__)
                await asyncio.sleep(1.0)
            finally:
                if watcher is not None:
                    with contextlib.suppress(Exception):
                        await watcher.stop()  # type: ignore[no-untyped-call]

    def _on_report(self, key: str, value: bytes) -> None:
        try:
            report = report_decoder.decode(value)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return
        old = self._reports.get(key)
        if old is not None and old.reported_at_ms > report.reported_at_ms:
            return  # our own newer write got here first
        self._reports[key] = report
        if self._thing_of_report(key) is None and report.transport == "nats":
            self._enrol_reporter(key, report)

    def _on_sync(self, key: str, value: bytes) -> None:
        try:
            rec = _sync_decoder.decode(value)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return
        if rec.thing:
            self._sync[rec.thing] = rec
            self._wake(rec.thing)

    # --- the registry ---------------------------------------------------------------

    @property
    def state(self) -> HubState:
        return self.control.state

    def things(self) -> Iterator[Resource]:
        return self.state.all(THING)

    def active_things(self) -> Iterable[Resource]:
        return [t for t in self.things() if t.thing is not None and t.thing.status == "active"]

    def thing(self, thing_id: str) -> Resource | None:
        return self.state.get(THING, thing_id)

    def _indexes(self) -> tuple[dict[str, str], dict[str, str]]:
        """(report key -> thing id, token hash -> thing id), rebuilt when the
        things changed (the state shares an unchanged aggregate's dict)."""
        table = self.state.items.get(THING, {})
        if self._index is None or self._index[0] is not table:
            by_report = {report_key_of(t): t.id for t in table.values()}
            by_token = {t.thing.token_hash: t.id for t in table.values() if t.thing and t.thing.token_hash}
            self._index = (table, by_report, by_token)
        return self._index[1], self._index[2]

    def _thing_of_report(self, key: str) -> str | None:
        return self._indexes()[0].get(key)

    def thing_by_token(self, token: str) -> Resource | None:
        """The active thing whose sync token this is (None: no such thing,
        or revoked)."""
        if not token or len(token) > 256:
            return None
        digest = token_hash(token)
        thing_id = self._indexes()[1].get(digest)
        thing = self.thing(thing_id) if thing_id else None
        if thing is None or thing.thing is None:
            return None
        if not hmac.compare_digest(thing.thing.token_hash.encode(), digest.encode()):
            return None
        return thing if thing.thing.status == "active" else None

    def desired(self, thing: Resource) -> Desired:
        head = self._head()
        template = self.state.get(THING_TEMPLATE, thing.spec.type)
        stamp = (thing.version, template.version if template is not None else 0, head.revision if head else 0)
        hit = self._desired.get(thing.id)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        desired = desired_of(self.state, thing, head)
        self._desired[thing.id] = (stamp, desired)
        return desired

    def report(self, thing: Resource) -> NodeReport | None:
        return self._reports.get(report_key_of(thing))

    def sync_record(self, thing_id: str) -> SyncRecord:
        return self._sync.get(thing_id) or SyncRecord()

    def status(self, thing: Resource, now: int | None = None) -> Status:
        return status_of(
            thing, self.report(thing), self._sync.get(thing.id), self.clock() if now is None else now
        )

    def counts(self) -> dict[str, int]:
        """How many things are in each status."""
        now = self.clock()
        out: dict[str, int] = {}
        for thing in self.things():
            status = self.status(thing, now)
            out[status] = out.get(status, 0) + 1
        return out

    def reports(self) -> dict[str, NodeReport]:
        return dict(self._reports)

    # --- signals ------------------------------------------------------------------

    def signal(self, thing: Resource) -> Signal:
        if thing.thing is None or thing.thing.status != "active":
            return Signal(kind="revoked", thing=thing.id, version=0)
        desired = self.desired(thing)
        rec = self.sync_record(thing.id)
        push = rec.pushes if rec.version == desired.version else 0
        return Signal(kind="changed", thing=thing.id, version=desired.version, push=push)

    def subscribe(self, thing_id: str) -> Subscription:
        sub = Subscription(thing_id)
        self._subs.setdefault(thing_id, set()).add(sub)
        CONNECTED.set(sum(len(s) for s in self._subs.values()))
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.thing_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.thing_id]
        CONNECTED.set(sum(len(s) for s in self._subs.values()))

    def _wake(self, thing_id: str) -> None:
        for sub in self._subs.get(thing_id, ()):
            sub.wake.set()

    def wake_all(self) -> None:
        """The state or the snapshot head moved: every connection checks
        whether its thing's signal changed (and sends it if so), and the
        desired state of NATS nodes is rewritten where it moved."""
        for subs in self._subs.values():
            for sub in subs:
                sub.wake.set()
        self._push_wanted = True
        if self._sync_kv is not None and (self._pushing is None or self._pushing.done()):
            self._pushing = asyncio.get_running_loop().create_task(self._push_loop(), name="fleet-push")

    async def _push_loop(self) -> None:
        while self._push_wanted and not self._stopping.is_set():
            self._push_wanted = False
            await self._push_nats()

    @staticmethod
    def _nats_node(thing: Resource) -> bool:
        """A node inside the NATS trust boundary that follows the Hub's
        snapshots (enrolled by its report): it watches its desired state in
        the sync bucket."""
        return thing.thing is not None and thing.thing.how == "report" and thing.spec.type in SNAPSHOT_TYPES

    async def _push_nats(self, only: str = "", push: int = 0) -> None:
        """Write the desired state of each NATS node whose (version, push)
        moved since this replica last wrote it.  Replicas writing the same
        record is harmless: it is the same content."""
        assert self._sync_kv is not None
        for thing in self.active_things():
            if (only and thing.id != only) or not self._nats_node(thing):
                continue
            desired = self.desired(thing)
            rec = self.sync_record(thing.id)
            at = (desired.version, push or (rec.pushes if rec.version == desired.version else 0))
            if self._pushed.get(thing.id) == at:
                continue
            try:
                await self._sync_kv.put(
                    desired_key(report_key_of(thing)), _encode(Pushed(desired=desired, push=at[1]))
                )
            except (nats.errors.Error, JetStreamError, OSError) as exc:
                log.warning("fleet: desired state of %s not written (%s)", thing.id, type(exc).__name__)
                continue
            self._pushed[thing.id] = at

    async def repush(self, thing_id: str, version: int, push: int) -> None:
        # The sync record saved before this carries the push count: every
        # replica's watcher wakes that thing's connections with it.
        REPUSHES.inc()
        log.info("fleet: re-push %d of desired version %d to %s", push, version, thing_id)
        self._wake(thing_id)
        thing = self.thing(thing_id)
        if thing is not None and self._nats_node(thing):
            await self._push_nats(only=thing_id, push=push)

    async def save_sync(self, thing_id: str, rec: SyncRecord) -> None:
        old = self._sync.get(thing_id)
        self._sync[thing_id] = rec
        if rec.drift and not (old and old.drift):
            DRIFTED.inc()
        assert self._sync_kv is not None
        await self._sync_kv.put(report_key("t", thing_id), _encode(rec))

    # --- reports ------------------------------------------------------------------

    async def record(self, thing: Resource, report: Report, transport: str) -> NodeReport:
        """A report (or heartbeat) a thing sent over the sync protocol, stored
        as its node report."""
        spec: ThingSpec = thing.spec
        key = report_key_of(thing)
        now = self.clock()
        old = self._reports.get(key)
        if report.kind == "heartbeat" and old is not None:
            node = msgspec.structs.replace(
                old, reported_at_ms=now, transport=transport, heartbeat_s=report.heartbeat_s
            )
        else:
            failed = [k for k, o in report.outcomes.items() if o.status != "applied"]
            node = NodeReport(
                node_kind=spec.type,
                node_id=spec.reports_as,
                revision=report.revision,
                digest=report.digest,
                source="hub",
                status="failed" if failed else "applied",
                error=f"not applied: {', '.join(sorted(failed))}"[:500] if failed else "",
                applied_at_ms=now if report.kind == "report" else (old.applied_at_ms if old else 0),
                reported_at_ms=now,
                started_at_ms=old.started_at_ms if old is not None else now,
                posture=dict(report.posture),
                heartbeat_s=report.heartbeat_s,
                desired_version=report.version,
                outcomes=dict(report.outcomes),
                transport=transport,
            )
        self._reports[key] = node
        self._touched[thing.id] = now
        REPORTS.labels(transport).inc()
        assert self._reports_kv is not None
        await self._reports_kv.put(key, _encode(node))
        await self._recovered(thing, node, now)
        return node

    async def _recovered(self, thing: Resource, report: NodeReport, now: int) -> None:
        """A thing in drift whose report now shows the desired state is
        online again at once (the drift job would see it on its next run)."""
        rec = self._sync.get(thing.id)
        if rec is None or not rec.drift:
            return
        desired = self.desired(thing)
        if not pending_keys(desired, report):
            log.info("fleet: thing %s recovered (desired version %d)", thing.id, desired.version)
            await self.save_sync(
                thing.id, SyncRecord(thing=thing.id, version=desired.version, converged_at_ms=now)
            )

    async def touch(self, thing: Resource, transport: str) -> None:
        """A sign of life (a long poll): stored at most every third of a
        heartbeat, so polling does not multiply writes."""
        now = self.clock()
        old = self._reports.get(report_key_of(thing))
        interval = (old.heartbeat_s if old is not None else 15.0) * 1000 / 3
        if now - self._touched.get(thing.id, 0) < interval:
            return
        await self.record(thing, Report(kind="heartbeat"), transport)

    def _enrol_reporter(self, key: str, report: NodeReport) -> None:
        """A NATS node that reports and is not a thing yet: enrol it."""
        kind, node_id = report.node_kind, report.node_id
        thing_id = f"{kind}.{node_id}"
        if key in self._enrolling or kind not in THING_TYPES:
            return
        try:
            check_thing_id(thing_id)
        except DomainError:
            log.warning("fleet: node %s reports but %r cannot be a thing id; not enrolled", key, thing_id)
            return
        self._enrolling.add(key)
        spec = ThingSpec(id=thing_id, type=kind, node_id=node_id, name=report.host)

        async def enrol() -> None:
            try:
                await self.control.execute(
                    EnrolThing(
                        id=f"enrol-report:{thing_id}",
                        actor=REGISTRY_ACTOR,
                        at_ms=self.clock(),
                        spec=spec,
                        how="report",
                    )
                )
                log.info("fleet: %s enrolled by its first report", thing_id)
            except DomainError as exc:
                log.debug("fleet: %s not enrolled (%s)", thing_id, exc.message)
            except (nats.errors.Error, JetStreamError, OSError, TimeoutError) as exc:
                log.warning(
                    "fleet: enrolling %s failed (%s); next report retries", thing_id, type(exc).__name__
                )
            finally:
                self._enrolling.discard(key)

        task = asyncio.get_running_loop().create_task(enrol(), name=f"fleet-enrol-{thing_id}")
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    # --- overrides past their expiry -------------------------------------------------

    def expired_overrides(self, now: int) -> list[tuple[Resource, str, Override]]:
        out = []
        for thing in self.active_things():
            assert thing.thing is not None
            for key, o in thing.thing.overrides.items():
                if o.expires_at_ms and o.expires_at_ms <= now:
                    out.append((thing, key, o))
        return out
