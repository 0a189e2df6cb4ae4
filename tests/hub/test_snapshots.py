"""Snapshots end to end on a real JetStream: the Hub publishes (object +
head), real followers (streams.snapshots, what every node runs) pull,
verify, apply, cache and report; a bad snapshot is reported and the node
keeps its last good one; a node restarts from its cache without the Hub."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS

from hub.commands import ChangeKeyStatus, Upsert
from hub.control import ControlPlane
from hub.publishing import SnapshotPublisher
from streams.config import Org
from streams.events import now_ms, uuid7
from streams.snapshots import (
    HEAD_KEY,
    Snapshot,
    SnapshotFollower,
    SnapshotStore,
    node_reports,
)
from streams.topology import Topology
from tests.hub.conftest import demo_config, import_config

pytestmark = pytest.mark.integration


class Node:
    """A node's apply: records what it was given; can be told to refuse."""

    def __init__(self) -> None:
        self.applied: list[Snapshot] = []
        self.refuse = False

    async def apply(self, snap: Snapshot) -> None:
        if self.refuse:
            raise RuntimeError("cannot build the hook engine")
        self.applied.append(snap)


@pytest.fixture
async def publisher(control: ControlPlane, nc: NATS, topology: Topology) -> AsyncIterator[SnapshotPublisher]:
    pub = SnapshotPublisher(SnapshotStore(nc.jetstream(), topology), debounce_s=0.01)
    control.on_change(pub.changed)
    await pub.start()
    yield pub
    await pub.stop()


def follower(nats_url: str, topology: Topology, node: Node, tmp_path: Path, name: str) -> SnapshotFollower:
    return SnapshotFollower(
        nats_url,
        topology,
        node_kind="gateway",
        node_id=name,
        apply=node.apply,
        cache_path=tmp_path / f"{name}.json",
        poll_interval_s=0.5,
        heartbeat_s=0.5,
        posture=lambda: {"hooks": True},
    )


def env() -> dict[str, object]:
    return {"id": uuid7(), "actor": "nrn:nexus:iam::user/admin", "at_ms": now_ms()}


async def test_nodes_follow_the_hub_and_report(
    control: ControlPlane,
    publisher: SnapshotPublisher,
    nats_url: str,
    nc: NATS,
    topology: Topology,
    tmp_path: Path,
) -> None:
    await import_config(control, demo_config())
    head = await publisher.wait_reflects(control.state.seq)
    assert head.revision == control.state.seq
    nodes = [Node(), Node()]
    followers = [follower(nats_url, topology, n, tmp_path, f"gw-{i}") for i, n in enumerate(nodes)]
    try:
        for f in followers:
            await f.start(wait_s=5)
        for n in nodes:
            assert [s.revision for s in n.applied] == [head.revision]
            assert n.applied[0].config == demo_config()
        # A change that reaches nodes (a revoked key) is a new revision they apply.
        out = await control.execute(ChangeKeyStatus(**env(), rid="demo-key", status="revoked"))  # type: ignore[arg-type]
        for f in followers:
            snap = await f.wait_revision(out.seq, timeout=5)
            assert next(k for k in snap.config.virtual_keys if k.id == "demo-key").status == "revoked"

        # Each node said what it runs.
        async def reported() -> list[int]:
            return [r.revision for r in await node_reports(nc.jetstream(), topology)]

        for _ in range(50):
            if await reported() == [out.seq, out.seq]:
                break
            await asyncio.sleep(0.1)
        reports = await node_reports(nc.jetstream(), topology)
        assert [(r.node_id, r.revision, r.status, r.source) for r in reports] == [
            ("gw-0", out.seq, "applied", "hub"),
            ("gw-1", out.seq, "applied", "hub"),
        ]
        assert reports[0].posture == {"hooks": True}
        # The cache is the last applied snapshot, readable by its owner only.
        cache = tmp_path / "gw-0.json"
        assert stat.S_IMODE(os.stat(cache).st_mode) == 0o600
    finally:
        for f in followers:
            await f.stop()


async def test_a_change_nodes_do_not_run_publishes_no_revision(
    control: ControlPlane, publisher: SnapshotPublisher
) -> None:
    await import_config(control, demo_config())
    first = await publisher.wait_reflects(control.state.seq)
    # The hub section (users, groups, policies) never reaches nodes: adding
    # an org with no other effect does, and publishes; re-saving an equal
    # setting does not even make an event.
    out = await control.execute(Upsert(**env(), aggregate="org", rid="acme", spec=Org(id="acme")))  # type: ignore[arg-type]
    second = await publisher.wait_reflects(out.seq)
    assert second.revision == out.seq > first.revision
    same = await control.execute(Upsert(**env(), aggregate="org", rid="acme", spec=Org(id="acme")))  # type: ignore[arg-type]
    assert same.seq == 0


async def test_a_bad_snapshot_is_reported_and_the_node_keeps_its_own(
    control: ControlPlane,
    publisher: SnapshotPublisher,
    nats_url: str,
    nc: NATS,
    topology: Topology,
    tmp_path: Path,
) -> None:
    await import_config(control, demo_config())
    good = await publisher.wait_reflects(control.state.seq)
    node = Node()
    f = follower(nats_url, topology, node, tmp_path, "gw")
    await f.start(wait_s=5)
    try:
        assert f.revision == good.revision
        # 1. The node refuses a revision (its own apply fails): it keeps the old one.
        node.refuse = True
        out = await control.execute(Upsert(**env(), aggregate="org", rid="acme", spec=Org(id="acme")))  # type: ignore[arg-type]
        await publisher.wait_reflects(out.seq)
        report = await _report_when(nc, topology, lambda r: r.status == "failed")
        assert (report.revision, report.failed_revision) == (good.revision, out.seq)
        assert "hook engine" in report.error
        assert f.revision == good.revision
        # 2. A payload altered in the store fails its digest: never applied.
        node.refuse = False
        js = nc.jetstream()
        kv = await js.key_value(topology.snapshot_head_bucket)
        obs = await js.object_store(topology.snapshot_bucket)
        entry = await kv.get(HEAD_KEY)
        head = msgspec.json.decode(entry.value or b"")
        forged = dict(head, revision=head["revision"] + 1, object="rev/forged", digest="f" * 64)
        await obs.put("rev/forged", b'{"format":1,"revision":0,"published_at_ms":0,"config":{}}')
        await kv.put(HEAD_KEY, msgspec.json.encode(forged))
        report = await _report_when(nc, topology, lambda r: r.failed_revision == forged["revision"])
        assert "does not match its head" in report.error
        assert f.revision == good.revision and len(node.applied) == 1
    finally:
        await f.stop()


async def test_a_node_restarts_from_its_cache_without_nats(
    control: ControlPlane, publisher: SnapshotPublisher, nats_url: str, topology: Topology, tmp_path: Path
) -> None:
    await import_config(control, demo_config())
    head = await publisher.wait_reflects(control.state.seq)
    first = Node()
    f = follower(nats_url, topology, first, tmp_path, "gw")
    await f.start(wait_s=5)
    await f.stop()
    # NATS unreachable (nothing listens there): the cache is applied at once.
    again = Node()
    offline = follower("nats://127.0.0.1:1", topology, again, tmp_path, "gw")
    try:
        snap = await asyncio.wait_for(offline.start(wait_s=0.5), 5)
        assert snap is not None and snap.source == "cache" and snap.revision == head.revision
        assert again.applied[0].config == demo_config()
    finally:
        await offline.stop()
    # A cache that was tampered with is not used.
    cache = tmp_path / "gw.json"
    cache.write_bytes(cache.read_bytes().replace(b"demo-org", b"evil-org"))
    third = Node()
    offline = follower("nats://127.0.0.1:1", topology, third, tmp_path, "gw")
    try:
        assert await asyncio.wait_for(offline.start(wait_s=0.2), 5) is None
        assert third.applied == []
    finally:
        await offline.stop()


async def test_the_head_never_moves_backwards(nc: NATS, topology: Topology) -> None:
    store = SnapshotStore(nc.jetstream(), topology, keep=2)
    cfg = demo_config()
    h5 = await store.publish(cfg, 5)
    assert h5 is not None and h5.revision == 5
    older = msgspec.structs.replace(cfg, orgs=())
    assert await store.publish(older, 4) is None
    assert await store.publish(cfg, 9) is None  # same config: nothing new
    for rev in (10, 11, 12):
        orgs = (*cfg.orgs, Org(id=f"o{rev}"))
        assert await store.publish(msgspec.structs.replace(cfg, orgs=orgs), rev) is not None
    head = await store.head()
    assert head is not None and head.revision == 12
    fetched, _ = await store.fetch(head)
    assert fetched.orgs[-1].id == "o12"
    obs = await nc.jetstream().object_store(topology.snapshot_bucket)
    names = sorted(i.name for i in await obs.list() if not i.deleted)
    assert [n.split("-")[0] for n in names] == ["rev/000000000011", "rev/000000000012"]
    assert head.object in names


async def test_two_replicas_publishing_one_revision_leave_a_head_matching_its_payload(
    nc: NATS, topology: Topology
) -> None:
    """Each replica's payload has its own time: the loser of the head's
    compare-and-set must not overwrite the object the winner's head names."""
    cfg = demo_config()
    for rev in range(1, 6):
        stores = [SnapshotStore(nc.jetstream(), topology) for _ in range(2)]
        changed = msgspec.structs.replace(cfg, orgs=(*cfg.orgs, Org(id=f"r{rev}")))
        await asyncio.gather(*(s.publish(changed, rev, now_ms=1000 * rev + i) for i, s in enumerate(stores)))
        head = await stores[0].head()
        assert head is not None and head.revision == rev
        fetched, _ = await stores[1].fetch(head)  # checks the digest and size
        assert fetched.orgs[-1].id == f"r{rev}"


async def _report_when(nc: NATS, topology: Topology, cond: object, timeout: float = 5.0):  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        reports = await node_reports(nc.jetstream(), topology)
        if reports and cond(reports[0]):  # type: ignore[operator]
            return reports[0]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no such report: {reports}")
        await asyncio.sleep(0.1)


def _patient(nats_url: str, topology: Topology, node: Node, tmp_path: Path, name: str) -> SnapshotFollower:
    """A follower whose backstops (the head poll, the report heartbeat) are
    a minute away: what arrives sooner came by the watch or a retry."""
    return SnapshotFollower(
        nats_url,
        topology,
        node_kind="gateway",
        node_id=name,
        apply=node.apply,
        cache_path=tmp_path / f"{name}.json",
        poll_interval_s=60,
        heartbeat_s=60,
    )


async def _reported(nc: NATS, topology: Topology, revision: int, within: float) -> bool:
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        if [r.revision for r in await node_reports(nc.jetstream(), topology)] == [revision]:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_head_or_report_nats_failed_is_tried_again_within_seconds(
    control: ControlPlane,
    publisher: SnapshotPublisher,
    nats_url: str,
    nc: NATS,
    topology: Topology,
    tmp_path: Path,
) -> None:
    """A change must reach every node within 2 s: a head read or a report
    NATS fails once (a timeout under load) is retried at once, not after
    the next poll or heartbeat (a minute here)."""
    await import_config(control, demo_config())
    await publisher.wait_reflects(control.state.seq)
    node = Node()
    f = _patient(nats_url, topology, node, tmp_path, "gw-0")
    await f.start(wait_s=5)
    try:
        assert f._store is not None and f._reports_kv is not None
        # The report of the next revision fails once.
        kv = f._reports_kv
        real_put = kv.put
        fails = [nats.errors.TimeoutError()]

        async def put(key: str, value: bytes) -> int:
            if fails:
                raise fails.pop()
            return await real_put(key, value)

        kv.put = put  # type: ignore[method-assign]
        out = await control.execute(ChangeKeyStatus(**env(), rid="demo-key", status="revoked"))  # type: ignore[arg-type]
        await f.wait_revision(out.seq, timeout=5)
        assert not fails and await _reported(nc, topology, out.seq, within=10)
        # The head read after the next change fails once.
        store = f._store
        real_head = store.head
        head_fails = [nats.errors.TimeoutError()]

        async def head() -> Any:
            if head_fails:
                raise head_fails.pop()
            return await real_head()

        store.head = head  # type: ignore[method-assign]
        out = await control.execute(Upsert(**env(), aggregate="org", rid="acme", spec=Org(id="acme")))  # type: ignore[arg-type]
        await f.wait_revision(out.seq, timeout=10)
        assert not head_fails and node.applied[-1].revision == out.seq
    finally:
        await f.stop()
