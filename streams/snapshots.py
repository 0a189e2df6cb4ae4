"""Config snapshots: how the Hub hands configuration to every node.

The contract, for the Hub and for every node (gateway, proxy, processors,
and the agent through the Hub later):

- The payload of a snapshot is a ``SnapshotDocument`` (the revision and a
  whole ``NexusConfig``), JSON, stored as one object ``rev/<revision>`` in
  the object store ``Topology.snapshot_bucket``.  Nothing secret is in it:
  provider credentials are names of environment variables.
- The *change signal* is the small ``SnapshotHead`` under the key ``head``
  of the KV bucket ``Topology.snapshot_head_bucket``: revision, the payload's
  sha256 and size, the config's own digest, when.  Nodes watch that key and
  pull the object; the Hub never pushes the config over the signal.
- Revisions only go up (the Hub uses the CONFIG stream sequence the state
  was compiled at); a head is replaced only by a newer one (compare and set
  on the KV entry), so two Hub replicas cannot move it backwards.
- A node keeps the last snapshot it applied on disk (``SnapshotCache``); a
  node that restarts while the Hub (or NATS) is away serves from it.
- A node reports what it applied (``NodeReport``, KV bucket
  ``Topology.node_report_bucket``, one key per node): the *reported* half of
  the shadow part 2's thing registry builds on.

``SnapshotFollower`` is the node side: cache first, then watch, fetch,
verify, validate (off the event loop), hand the config to the node's
``apply`` and report the outcome.  A snapshot that fails anywhere (digest,
decode, validation, the node's own apply) is reported and the node keeps
the one it has (fail static).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec
import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, ObjectStoreConfig, StorageType
from nats.js.errors import (
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)
from nats.js.errors import Error as JetStreamError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from streams.config import NexusConfig
from streams.config_base import ConfigError
from streams.config_fleet import CONFIG_KEY
from streams.config_validation import validate_config
from streams.fleet_node import KeyFollower, KeysApply, unsupported
from streams.fleet_wire import KeyOutcome, value_digest
from streams.jetstream import connect
from streams.kv_scan import scan
from streams.tasks import stop_tasks
from streams.topology import Topology

log = logging.getLogger("nexus.snapshots")

FORMAT = 1
HEAD_KEY = "head"


class SnapshotHead(msgspec.Struct, frozen=True, kw_only=True):
    revision: int
    digest: str  # sha256 (hex) of the payload object's bytes
    config_digest: str  # sha256 of the canonical config: equal configs, equal digests
    size: int
    object: str  # the payload's name in the snapshot bucket
    published_at_ms: int
    format: int = FORMAT


class SnapshotDocument(msgspec.Struct, kw_only=True):
    format: int = FORMAT
    revision: int
    published_at_ms: int
    config: NexusConfig


@dataclass(frozen=True)
class Snapshot:
    """A verified snapshot as a node receives it."""

    head: SnapshotHead
    config: NexusConfig
    source: Literal["hub", "cache"]

    @property
    def revision(self) -> int:
        return self.head.revision


class SnapshotError(Exception):
    """A snapshot that cannot be used: missing, altered, or not a config."""


_canonical = msgspec.json.Encoder(order="deterministic")
_head_decoder = msgspec.json.Decoder(SnapshotHead)
_doc_decoder = msgspec.json.Decoder(SnapshotDocument)


def config_digest(config: NexusConfig) -> str:
    return hashlib.sha256(_canonical.encode(config)).hexdigest()


def object_name(revision: int, digest: str = "") -> str:
    """The payload's object: by revision (zero-padded, so names sort by it)
    and the payload's digest.  Two Hub replicas publishing the same revision
    write different payloads (each its own time): with one name per
    revision the loser of the head's compare-and-set would overwrite the
    winner's object, and nodes would find a payload that does not match the
    head.  With the digest in the name each head names its own bytes."""
    name = f"rev/{revision:012d}"
    return f"{name}-{digest[:16]}" if digest else name


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def decode_document(head: SnapshotHead, payload: bytes) -> NexusConfig:
    """The config of a payload, after checking it is the one ``head`` names."""
    if len(payload) != head.size or hashlib.sha256(payload).hexdigest() != head.digest:
        raise SnapshotError(
            f"snapshot {head.revision}: the payload does not match its head (altered or truncated)"
        )
    try:
        doc = _doc_decoder.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise SnapshotError(f"snapshot {head.revision}: not a config document: {exc}") from None
    if doc.format != head.format or doc.revision != head.revision:
        raise SnapshotError(f"snapshot {head.revision}: the document says revision {doc.revision}")
    return doc.config


async def _kv(js: JetStreamContext, bucket: str, *, history: int, create: bool) -> KeyValue:
    try:
        return await js.key_value(bucket)
    except (BucketNotFoundError, NotFoundError):
        if not create:
            raise
    with contextlib.suppress(JetStreamError):
        return await js.create_key_value(
            KeyValueConfig(bucket=bucket, history=history, storage=StorageType.FILE)
        )
    return await js.key_value(bucket)


async def _obs(js: JetStreamContext, bucket: str, *, create: bool) -> ObjectStore:
    try:
        return await js.object_store(bucket)
    except (BucketNotFoundError, NotFoundError):
        if not create:
            raise
    with contextlib.suppress(JetStreamError):
        return await js.create_object_store(
            bucket, ObjectStoreConfig(bucket=bucket, storage=StorageType.FILE)
        )
    return await js.object_store(bucket)


class SnapshotStore:
    """Both sides of the object store and the head record."""

    def __init__(self, js: JetStreamContext, topology: Topology, *, keep: int = 10) -> None:
        self._js = js
        self.topology = topology
        self._keep = keep
        self._kv_: KeyValue | None = None
        self._obs_: ObjectStore | None = None

    async def _kv(self) -> KeyValue:
        if self._kv_ is None:
            self._kv_ = await _kv(self._js, self.topology.snapshot_head_bucket, history=5, create=True)
        return self._kv_

    async def _obs(self) -> ObjectStore:
        if self._obs_ is None:
            self._obs_ = await _obs(self._js, self.topology.snapshot_bucket, create=True)
        return self._obs_

    async def ensure(self) -> None:
        await self._kv()
        await self._obs()

    async def head_entry(self) -> tuple[SnapshotHead | None, int]:
        """The head and its KV revision (0 when there is none)."""
        kv = await self._kv()
        try:
            entry = await kv.get(HEAD_KEY)
        except KeyNotFoundError:
            return None, 0
        if not entry.value:
            return None, int(entry.revision or 0)
        try:
            return _head_decoder.decode(entry.value), int(entry.revision or 0)
        except (msgspec.ValidationError, msgspec.DecodeError):
            log.warning("snapshot head is not readable; it will be replaced")
            return None, int(entry.revision or 0)

    async def head(self) -> SnapshotHead | None:
        return (await self.head_entry())[0]

    async def publish(
        self, config: NexusConfig, revision: int, *, now_ms: int | None = None
    ) -> SnapshotHead | None:
        """Store ``config`` as ``revision`` and move the head to it; None when
        the head already is at this config or at a newer revision."""
        digest = config_digest(config)
        for _ in range(5):
            current, kv_rev = await self.head_entry()
            if current is not None and (current.revision >= revision or current.config_digest == digest):
                return None
            published = _now_ms() if now_ms is None else now_ms
            payload = _canonical.encode(
                SnapshotDocument(revision=revision, published_at_ms=published, config=config)
            )
            sha = hashlib.sha256(payload).hexdigest()
            head = SnapshotHead(
                revision=revision,
                digest=sha,
                config_digest=digest,
                size=len(payload),
                object=object_name(revision, sha),
                published_at_ms=published,
            )
            obs = await self._obs()
            await obs.put(head.object, payload)
            kv = await self._kv()
            try:
                if kv_rev:
                    await kv.update(HEAD_KEY, _canonical.encode(head), last=kv_rev)
                else:
                    await kv.create(HEAD_KEY, _canonical.encode(head))
            except (KeyWrongLastSequenceError, JetStreamError) as exc:
                log.info("snapshot head moved while publishing (%s); checking again", type(exc).__name__)
                continue
            await self._prune(head.object)
            return head
        return None

    async def _prune(self, newest: str) -> None:
        """Keep the newest ``keep`` payloads: a node fetching the head (or
        the one before it) always finds its object."""
        obs = await self._obs()
        try:
            infos = await obs.list()
        except (NotFoundError, JetStreamError):
            return
        names = sorted(i.name for i in infos if i.name and i.name.startswith("rev/") and not i.deleted)
        for name in names[: max(0, len(names) - self._keep)]:
            if name != newest:
                with contextlib.suppress(NotFoundError, JetStreamError):
                    await obs.delete(name)

    async def fetch(self, head: SnapshotHead) -> tuple[NexusConfig, bytes]:
        """The verified config (and its payload bytes) of ``head``."""
        obs = await self._obs()
        try:
            result = await obs.get(head.object)
        except (NotFoundError, JetStreamError) as exc:
            raise SnapshotError(
                f"snapshot {head.revision}: object {head.object} is missing ({exc})"
            ) from None
        payload = bytes(result.data or b"")
        return decode_document(head, payload), payload


# --- the node's side ------------------------------------------------------------


class SnapshotCache:
    """The last snapshot a node applied, on disk (0600), written atomically:
    a node restarting without the Hub starts from it."""

    class _File(msgspec.Struct):
        head: SnapshotHead
        payload: msgspec.Raw

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> tuple[SnapshotHead, NexusConfig] | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            f = msgspec.json.decode(data, type=SnapshotCache._File)
            return f.head, decode_document(f.head, bytes(f.payload))
        except (msgspec.ValidationError, msgspec.DecodeError, SnapshotError) as exc:
            log.warning("snapshot cache %s is not usable (%s); ignoring it", self.path, exc)
            return None

    def save(self, head: SnapshotHead, payload: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = msgspec.json.encode(SnapshotCache._File(head=head, payload=msgspec.Raw(payload)))
        fd, tmp = tempfile.mkstemp(prefix=".snapshot-", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


ReportStatus = Literal["applied", "failed"]


class ProxyEndpoint(msgspec.Struct, kw_only=True, frozen=True):
    """What a client needs to use a proxy node, as the node reports it (the
    Hub's PAC file and CA bundle are made of these): the address clients
    are told to use, and the certificates of the CAs its leaves chain to
    (PEM; the signing one first, a second one during a rotation).  Public
    certificates only: a CA's private key never leaves the node."""

    address: str  # host:port ([v6]:port)
    ca_certificates: tuple[str, ...] = ()


class NodeReport(msgspec.Struct, kw_only=True):
    """What a node runs, as it says: the reported half of its shadow.  Part 2's
    registry adds desired state and status (online/offline/drift) on top;
    ``reported_at_ms`` doubles as the heartbeat."""

    node_kind: str
    node_id: str
    revision: int = 0  # the snapshot revision being served (0: none, or a file)
    digest: str = ""  # its config digest
    source: str = ""  # hub | cache | file
    status: ReportStatus = "applied"  # the outcome of the last attempt
    error: str = ""  # why the last attempt failed (our words)
    failed_revision: int = 0
    applied_at_ms: int = 0
    reported_at_ms: int = 0
    started_at_ms: int = 0
    host: str = ""
    pid: int = 0
    # Facts the node chooses to publish about itself (what is enabled, its
    # software version...): drift detection compares what really runs.
    posture: dict[str, str | int | float | bool] = {}
    # The fleet (hub.fleet): how often this node reports (three missed:
    # offline), the desired version it last acted on and what became of
    # each key of it.  Things speaking the sync protocol (streams.fleet_wire)
    # have these written by the Hub, with ``transport`` saying how they came.
    heartbeat_s: float = 15.0
    desired_version: int = 0
    outcomes: dict[str, KeyOutcome] = {}
    transport: str = "nats"  # nats | websocket | long-poll
    # A proxy node's address and CA certificates (None: not a proxy, or one
    # from before nodes said); a Hub that does not know the field ignores it.
    proxy: ProxyEndpoint | None = None


_KV_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def report_key(node_kind: str, node_id: str) -> str:
    """The KV key of a node's report (``gateway.node-1``); characters a key
    cannot hold are written ``=XX``."""

    def safe(v: str) -> str:
        return _KV_KEY_UNSAFE.sub(lambda m: "".join(f"={b:02X}" for b in m.group(0).encode()), v) or "="

    return f"{safe(node_kind)}.{safe(node_id)}"


async def report_bucket(js: JetStreamContext, topology: Topology) -> KeyValue:
    """The node report bucket, created when missing (the Hub writes the
    reports of things that speak the sync protocol; hub.fleet)."""
    return await _kv(js, topology.node_report_bucket, history=5, create=True)


report_decoder = msgspec.json.Decoder(NodeReport)


async def node_reports(js: JetStreamContext, topology: Topology) -> list[NodeReport]:
    """Every node's latest report (the Hub's view of the fleet)."""
    out = []
    # Exact, unlike nats-py's keys() (streams.kv_scan); no bucket, no reports.
    for item in await scan(js, topology.node_report_bucket):
        with contextlib.suppress(msgspec.ValidationError, msgspec.DecodeError):
            if item.value:
                out.append(report_decoder.decode(item.value))
    return sorted(out, key=lambda r: (r.node_kind, r.node_id))


Apply = Callable[[Snapshot], Awaitable[None]]

# A head, snapshot or report NATS failed to read or take is tried again this
# soon (doubling up to the poll interval), not at the next poll or heartbeat.
_RETRY_S = 0.25


class SnapshotFollower:
    """A node's snapshot client.  ``apply`` is the node's own: it raises to
    refuse a snapshot (the node keeps its current one); it is never called
    twice at once, and never with an older revision than it has."""

    def __init__(
        self,
        nats_url: str,
        topology: Topology,
        *,
        node_kind: str,
        node_id: str,
        apply: Apply,
        cache_path: Path | None = None,
        poll_interval_s: float = 5.0,
        heartbeat_s: float = 15.0,
        posture: Callable[[], Mapping[str, str | int | float | bool]] | None = None,
        connect_kwargs: Mapping[str, Any] | None = None,
        keys: KeysApply | None = None,
        proxy: ProxyEndpoint | None = None,
    ) -> None:
        self._url = nats_url
        self.topology = topology
        self._kind = node_kind
        self._id = node_id
        self._apply = apply
        self._cache = SnapshotCache(cache_path) if cache_path is not None else None
        self._poll = poll_interval_s
        self._heartbeat = heartbeat_s
        self._posture = posture
        self._connect_kwargs = dict(connect_kwargs or {})
        # The fleet keys this node applies (streams.fleet_node); without a
        # handler every key is reported unsupported.
        self._keys: KeysApply = keys or unsupported
        self._key_follower: KeyFollower | None = None
        self._key_outcomes: dict[str, KeyOutcome] = {}
        self.current: Snapshot | None = None
        self._failed_digest = ""
        self._report = NodeReport(
            node_kind=node_kind,
            node_id=node_id,
            started_at_ms=_now_ms(),
            host=socket.gethostname(),
            pid=os.getpid(),
            heartbeat_s=heartbeat_s,
            proxy=proxy,
        )
        self._nc: NATS | None = None
        self._store: SnapshotStore | None = None
        self._reports_kv: KeyValue | None = None
        self._task: asyncio.Task[None] | None = None
        self._beat: asyncio.Task[None] | None = None
        self._fleet: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self._apply_lock = asyncio.Lock()
        self._resend = asyncio.Event()
        self._resend_after = _RETRY_S
        self._closing = False

    @property
    def revision(self) -> int:
        return self.current.revision if self.current is not None else 0

    async def start(self, *, wait_s: float | None = None) -> Snapshot | None:
        """Apply the cached snapshot (if any), then follow the Hub in the
        background.  With ``wait_s``, wait up to that long for a first
        snapshot when there was none in the cache (None: don't wait)."""
        if self._cache is not None:
            cached = await asyncio.to_thread(self._cache.load)
            if cached is not None:
                head, config = cached
                await self._try_apply(Snapshot(head, config, "cache"), None)
        self._task = asyncio.create_task(self._run(), name=f"snapshots-{self._kind}")
        self._beat = asyncio.create_task(self._heartbeat_loop(), name=f"snapshot-report-{self._kind}")
        if wait_s is not None and self.current is None:
            with contextlib.suppress(TimeoutError):
                await self.wait_revision(1, timeout=wait_s)
        return self.current

    async def stop(self) -> None:
        self._closing = True
        with contextlib.suppress(Exception):  # bounded: a task that will not end must not hang a stop
            await stop_tasks(self._task, self._beat, self._fleet, within_s=5)
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = None

    async def wait_revision(self, revision: int, *, timeout: float) -> Snapshot:  # noqa: ASYNC109
        """The current snapshot once it is at ``revision`` or newer."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.revision >= revision)
        assert self.current is not None
        return self.current

    async def set_proxy(self, proxy: ProxyEndpoint | None) -> None:
        """What clients need to use this node as a proxy, in every report
        from now on (a node started after its follower: ``nexus proxy
        --hub``); reported at once."""
        self._report = msgspec.structs.replace(self._report, proxy=proxy)
        await self._send_report()

    async def refresh(self) -> None:
        """Check the head now (a node's SIGHUP, a test)."""
        if self._store is not None:
            await self._check(self._store)

    # --- the loop ---------------------------------------------------------------

    async def _connect(self) -> SnapshotStore:
        backoff = 0.2
        while True:
            try:
                self._nc = await connect(
                    self._url, name=f"nexus-{self._kind}-snapshots-{self._id}", **self._connect_kwargs
                )
                js = self._nc.jetstream()
                store = SnapshotStore(js, self.topology)
                await store.ensure()
                self._reports_kv = await _kv(js, self.topology.node_report_bucket, history=5, create=True)
                sync_kv = await _kv(js, self.topology.fleet_sync_bucket, history=1, create=True)
                self._key_follower = KeyFollower(
                    sync_kv, report_key(self._kind, self._id), apply=self._keys, outcomes=self._keys_applied
                )
                return store
            except (nats.errors.Error, OSError, JetStreamError, TimeoutError) as exc:
                log.warning(
                    "snapshots: NATS not reachable yet (%s); serving what we have", type(exc).__name__
                )
                if self._nc is not None:
                    with contextlib.suppress(Exception):
                        await self._nc.close()
                    self._nc = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _keys_applied(self, version: int, outcomes: dict[str, KeyOutcome]) -> None:
        self._key_outcomes = outcomes
        self._report = msgspec.structs.replace(self._report, desired_version=version)
        await self._send_report()

    async def _run(self) -> None:
        self._store = store = await self._connect()
        if self._key_follower is not None:
            follower = self._key_follower
            self._fleet = asyncio.create_task(
                follower.run(lambda: self._closing), name=f"fleet-keys-{self._kind}"
            )
        await self._send_report()
        while not self._closing:
            watcher = None
            try:
                kv = await store._kv()
                watcher = await kv.watch(HEAD_KEY)
                retry = 0.0 if await self._check(store) else _RETRY_S
                while not self._closing:
                    try:
                        # A head or snapshot that could not be read is tried
                        # again soon (doubling up to the poll), not only at the
                        # next poll: nodes apply a change within 2 s.
                        entry = await watcher.updates(timeout=retry or self._poll)  # type: ignore[no-untyped-call]
                    except nats.errors.TimeoutError:
                        pass  # the backstop (a watch can miss a reconnect), or the retry
                    else:
                        if entry is None:
                            continue  # the watcher's marker, nothing new
                    ok = await self._check(store)
                    retry = 0.0 if ok else min(self._poll, max(_RETRY_S, retry * 2))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("snapshots: following the head failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(1.0)
            finally:
                if watcher is not None:
                    with contextlib.suppress(Exception):
                        await watcher.stop()  # type: ignore[no-untyped-call]

    async def _check(self, store: SnapshotStore) -> bool:
        """Apply the head if it is new; False when it could not be read (a
        NATS error: worth trying again soon)."""
        try:
            head = await store.head()
        except (nats.errors.Error, JetStreamError, OSError) as exc:
            log.debug("snapshots: head not readable now (%s)", type(exc).__name__)
            return False
        if head is None or head.revision <= self.revision or head.digest == self._failed_digest:
            return True
        if self.current is not None and head.config_digest == self.current.head.config_digest:
            # The same config under a newer revision: nothing to fetch.
            await self._try_apply(Snapshot(head, self.current.config, "hub"), None)
            return True
        try:
            config, payload = await store.fetch(head)
        except SnapshotError as exc:
            await self._failed(head, str(exc))
            return True
        except (nats.errors.Error, JetStreamError, OSError) as exc:
            log.warning("snapshots: fetching revision %d failed (%s)", head.revision, type(exc).__name__)
            return False
        await self._try_apply(Snapshot(head, config, "hub"), payload)
        return True

    async def _try_apply(self, snap: Snapshot, payload: bytes | None) -> None:
        async with self._apply_lock:
            if snap.revision <= self.revision:
                return
            if self.current is not None and snap.head.config_digest == self.current.head.config_digest:
                await self._adopt(snap, None)  # nothing to rebuild
                return
            try:
                await asyncio.to_thread(validate_config, snap.config)
                await self._apply(snap)
            except ConfigError as exc:
                await self._failed(snap.head, str(exc))
                return
            except Exception as exc:
                log.exception("snapshots: the node refused revision %d", snap.revision)
                await self._failed(snap.head, f"{type(exc).__name__}: {exc}")
                return
            await self._adopt(snap, payload)

    async def _adopt(self, snap: Snapshot, payload: bytes | None) -> None:
        self.current = snap
        self._failed_digest = ""
        if payload is not None and self._cache is not None:
            try:
                await asyncio.to_thread(self._cache.save, snap.head, payload)
            except OSError as exc:
                log.warning("snapshots: cannot write the cache %s (%s)", self._cache.path, exc.strerror)
        self._report = msgspec.structs.replace(
            self._report,
            revision=snap.revision,
            digest=snap.head.config_digest,
            source=snap.source,
            status="applied",
            error="",
            failed_revision=0,
            applied_at_ms=_now_ms(),
        )
        log.info("snapshots: serving revision %d (from %s)", snap.revision, snap.source)
        async with self._changed:
            self._changed.notify_all()
        await self._send_report()

    async def _failed(self, head: SnapshotHead, error: str) -> None:
        log.error("snapshots: revision %d not applied, keeping %d: %s", head.revision, self.revision, error)
        self._failed_digest = head.digest
        self._report = msgspec.structs.replace(
            self._report, status="failed", error=error[:500], failed_revision=head.revision
        )
        await self._send_report()

    async def _send_report(self) -> None:
        kv = self._reports_kv
        if kv is None:
            return
        posture = dict(self._posture()) if self._posture is not None else {}
        outcomes = dict(self._key_outcomes)
        if self._report.revision or self._report.failed_revision:
            outcomes[CONFIG_KEY] = (
                KeyOutcome(status="failed", error=self._report.error[:200], at_ms=self._report.reported_at_ms)
                if self._report.status == "failed"
                else KeyOutcome(
                    status="applied",
                    digest=value_digest({"revision": self._report.revision, "digest": self._report.digest}),
                    at_ms=self._report.applied_at_ms,
                )
            )
        report = msgspec.structs.replace(
            self._report, reported_at_ms=_now_ms(), posture=posture, outcomes=outcomes
        )
        try:
            await kv.put(report_key(self._kind, self._id), msgspec.json.encode(report))
        except (nats.errors.Error, JetStreamError, OSError) as exc:
            log.debug("snapshots: report not sent (%s)", type(exc).__name__)
            self._resend.set()  # soon, not at the next heartbeat: what a node runs is read within 2 s
        else:
            self._resend_after = _RETRY_S

    async def _heartbeat_loop(self) -> None:
        while not self._closing:
            try:
                await asyncio.wait_for(self._resend.wait(), self._heartbeat)
            except TimeoutError:  # a heartbeat
                if self._key_follower is not None:
                    await self._key_follower.retry_failed()
            else:  # a report failed: again shortly (doubling while NATS is away)
                self._resend.clear()
                await asyncio.sleep(min(self._resend_after, self._heartbeat))
                self._resend_after *= 2
            await self._send_report()
