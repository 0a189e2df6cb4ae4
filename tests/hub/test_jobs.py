"""The Hub's scheduler on a real NATS and Postgres: the leader lease and its
fencing, claims that never run a job twice, the run history (a projection
of the job run events, rebuilt identically by a replay), the key-expiry job
and the admin API (list, history, run now)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from nats.aio.client import Client as NATS

from hub.jobs import history
from hub.jobs.lease import Lease
from hub.jobs.registry import JobContext, Registry, item_of
from hub.jobs.scheduler import Scheduler, Slot, slot_key
from hub.service import HubServer, HubSettings
from hub.signin.kv import Bucket
from streams.events import Node, now_ms
from streams.events_admin import JobRun
from streams.topology import Topology
from tests.hub.conftest import ADMIN_EMAIL, Client, demo_config, sign_in

pytestmark = [pytest.mark.integration]

A = "/api/admin"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Sink:
    """Collects what a scheduler emits (in place of the Hub's publisher)."""

    def __init__(self) -> None:
        self.events: list[msgspec.Struct] = []

    def emit(self, event: msgspec.Struct) -> None:
        self.events.append(event)


async def test_lease_is_taken_over_only_after_it_lapsed_and_fences_grow(nc: NATS, topology: Topology) -> None:
    bucket = Bucket(nc.jetstream(), topology.jobs_bucket, ttl_s=0)
    ca, cb = Clock(), Clock()
    a = Lease(bucket, "a", ttl_s=6.0, clock=ca)
    b = Lease(bucket, "b", ttl_s=6.0, clock=cb)
    assert await a.step() and a.held()
    first = a.fence
    assert not await b.step()  # a holds it: b starts counting
    for _ in range(5):  # a renews every 2 s: b never takes over
        ca.t += 2
        cb.t += 2
        assert await a.step()
        assert not await b.step()
    # a stops renewing (paused, cut off): it stops counting itself leader
    # at 0.75 x ttl, before b may take over at 1 x ttl (from when b saw it).
    ca.t += 4.4
    assert a.held()
    ca.t += 0.2
    assert not a.held()
    cb.t += 5.9
    assert not await b.step()
    cb.t += 0.2
    assert await b.step() and b.held()
    assert b.fence > first
    # a wakes up: its renewal fails on the revision, it knows it lost.
    assert not await a.step()
    assert a.fence == 0 and not a.held()
    # A clean release lets a follower in at once.
    await b.release()
    assert await a.step() and a.fence > b.fence


def test_the_item_an_nrn_names() -> None:
    assert item_of("nrn:nexus:hub::settings/hooks") == ("settings", "hooks")
    assert item_of("nrn:nexus:gateway:acme/eu:virtual-key/vk=1") == ("virtual-key", "vk:1")


def _counting_registry(runs: list[tuple[str, int, int]], name: str) -> Registry:
    reg = Registry()

    async def count(ctx: JobContext) -> str:
        runs.append((name, ctx.fence, ctx.number))
        await asyncio.sleep(0.01)
        return "counted"

    reg.add("count", every_s=0.2, run=count)
    return reg


async def test_two_schedulers_claim_each_run_once(nc: NATS, topology: Topology) -> None:
    """Two schedulers on one bucket: only the leader runs, each run number
    is claimed once; when the leader stops, the other continues the count."""
    from hub.control import ControlPlane
    from hub.store import ConfigStore

    control = ControlPlane(ConfigStore(nc.jetstream(), topology))
    await control.start()
    runs: list[tuple[str, int, int]] = []
    sinks = {n: Sink() for n in ("a", "b")}
    scheds = {
        n: Scheduler(
            _counting_registry(runs, n),
            Bucket(nc.jetstream(), topology.jobs_bucket, ttl_s=0),
            control,
            sinks[n],
            Node(kind="hub", id=n),
            lease_ttl_s=3.0,
            tick_s=0.05,
        )
        for n in ("a", "b")
    }
    try:
        await scheds["a"].start()
        await asyncio.sleep(0.3)
        await scheds["b"].start()
        await asyncio.sleep(1.5)
        assert {who for who, _, _ in runs} == {"a"}
        await scheds["a"].stop()  # releases the lease: b takes over at its next step
        before = len(runs)
        await asyncio.sleep(1.5)
        assert len(runs) > before and runs[-1][0] == "b"
    finally:
        for s in scheds.values():
            await s.stop()
        await control.stop()
    # Each claimed number ran once (the side effect), and ended once (the
    # run a's stop cut short ended 'failed').
    numbers = sorted(n for _, _, n in runs)
    assert numbers == list(range(1, len(runs) + 1)), "a run number ran twice, or was skipped"
    ends = Counter(
        e.run_number
        for s in sinks.values()
        for e in s.events
        if isinstance(e, JobRun) and e.status in ("succeeded", "failed")
    )
    assert sorted(ends) == numbers and set(ends.values()) == {1}
    a_runs = [(f, n) for who, f, n in runs if who == "a"]
    b_runs = [(f, n) for who, f, n in runs if who == "b"]
    assert max(n for _, n in a_runs) < min(n for _, n in b_runs)
    assert max(f for f, _ in a_runs) < min(f for f, _ in b_runs)


async def test_a_stale_leader_steps_down_instead_of_claiming(nc: NATS, topology: Topology) -> None:
    """A slot claimed under a larger fence: the older leader does not claim."""
    from hub.control import ControlPlane
    from hub.store import ConfigStore

    control = ControlPlane(ConfigStore(nc.jetstream(), topology))
    await control.start()
    runs: list[tuple[str, int, int]] = []
    bucket = Bucket(nc.jetstream(), topology.jobs_bucket, ttl_s=0)
    s = Scheduler(_counting_registry(runs, "old"), bucket, control, Sink(), Node(kind="hub", id="old"))
    try:
        assert await s.lease.step()
        kv = await bucket.kv()
        await kv.put(slot_key("count"), msgspec.json.encode(Slot(runs=7, fence=s.lease.fence + 1000)))
        await s._schedule()
        assert not s.lease.held() and not runs and not s.running
    finally:
        await s.stop()
        await control.stop()


# --- a real Hub: key expiry, history, the API ------------------------------------------


class Offset:
    """The jobs' wall clock, movable by the test."""

    def __init__(self) -> None:
        self.ms = 0

    def __call__(self) -> int:
        return now_ms() + self.ms


@pytest.fixture
async def timed_hub(
    nc: NATS, nats_url: str, topology: Topology, pg_dsn: str, tmp_path: Path
) -> AsyncIterator[tuple[HubServer, Client, Offset]]:
    clock = Offset()
    server = HubServer(
        HubSettings(
            nats_url=nats_url,
            topology=topology,
            data_dir=tmp_path / "hub",
            postgres_dsn=pg_dsn,
            port=0,
            snapshot_debounce_s=0.01,
            jobs_tick_s=0.1,
            jobs_clock=clock,
        )
    )
    await server.start()
    client: Client | None = None
    try:
        password = await server.bootstrap_admin(ADMIN_EMAIL)
        assert password is not None
        await server.import_config(demo_config())
        client = await sign_in(server.url, ADMIN_EMAIL, password)
        yield server, client, clock
    finally:
        if client is not None:
            await client.close()
        await server.stop()


async def eventually(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.1)


async def test_key_expiry_job_expires_keys_through_an_audited_command(
    timed_hub: tuple[HubServer, Client, Offset], pg_dsn: str, nc: NATS, topology: Topology
) -> None:
    server, admin, clock = timed_hub
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat()
    made = {}
    for name, expires in (("soon", soon), ("later", later), ("never", None)):
        body: dict[str, Any] = {"org": "demo-org", "project": "demo-project", "description": name}
        if expires:
            body["expires_at"] = expires
        ans = await admin.post(f"{A}/virtual-keys", body)
        assert ans.status == 201, ans
        made[name] = ans.json["item"]["id"]
    # The first scheduled run finds nothing to do: counted, not recorded.
    first = await eventually(lambda: _ran_quietly(admin, "key-expiry"))
    assert first["runs"] == first["quiet_runs"] == 1
    assert await _runs(admin, "key-expiry", status="succeeded") == []
    # Two hours later, for the jobs: a scheduled run is due at once too, and
    # whichever of it and the manual run comes first expires the key.
    clock.ms = 2 * 3600 * 1000
    asked = await admin.post(f"{A}/jobs/key-expiry/run")
    assert asked.status == 202, asked
    run_id = asked.json["run_id"]
    done = await eventually(lambda: _run(admin, "key-expiry", run_id, "succeeded"))
    assert done["trigger"] == "manual" and done["requested_by"].endswith("user/admin")
    expiring = [r for r in await _runs(admin, "key-expiry", status="succeeded") if r["stats"].get("expired")]
    assert len(expiring) == 1 and expiring[0]["stats"]["expired"] == 1, expiring
    assert made["soon"] in expiring[0]["detail"]
    key = (await admin.get(f"{A}/virtual-keys/{made['soon']}")).json
    assert key["key"]["status"] == "expired" and key["key"]["status_by"] == "system:job/key-expiry"
    for other in ("later", "never"):
        assert (await admin.get(f"{A}/virtual-keys/{made[other]}")).json["key"]["status"] == "active"
    # Nodes get the stored status in the snapshot.
    assert server.control is not None and server.snapshots is not None
    seq = server.control.state.seq
    await server.snapshots.wait_reflects(seq)
    # A second run changes nothing (idempotent), and the run is in the list.
    again = await admin.post(f"{A}/jobs/key-expiry/run")
    rerun = await eventually(lambda: _run(admin, "key-expiry", again.json["run_id"], "succeeded"))
    assert rerun["stats"].get("expired", 0) == 0
    listed = (await admin.get(f"{A}/jobs")).json
    assert listed["leadership"]["this_replica_leads"] is True
    names = {j["name"]: j for j in listed["jobs"]}
    assert {"key-expiry", "override-expiry"} <= set(names) and names["key-expiry"]["runs"] >= 3
    # The change is audited with the job as actor (an admin.action record).
    audit = await _job_actions(nc, topology)
    assert [a["resource"] for a in audit if a["action"] == "job:key-expiry"] == [
        f"nrn:nexus:gateway:demo-org:virtual-key/{made['soon']}"
    ]
    record = next(a for a in audit if a["action"] == "job:key-expiry")
    assert record["config_seq"] > 0 and record["command_id"].startswith("job:key-expiry:expire:")
    assert record["before_sha256"] and record["after_sha256"]
    assert record["before_sha256"] != record["after_sha256"]  # the view carries the status
    # The history is a projection: a replay writes the same rows.  The
    # scheduler stops first (no new runs), then the live projector once it
    # has written the last job run record (it would race the rebuild).
    assert server.scheduler is not None and server.job_history is not None
    await server.scheduler.stop()
    assert server.audit is not None and await server.audit.flush(10.0)
    js = nc.jetstream()
    last = await js.get_last_msg(topology.admin_stream, topology.admin_subject("admin.job_run"))
    writer = server.job_history

    async def caught_up() -> bool:
        return writer.synced_seq >= (last.seq or 0)

    await eventually(caught_up)
    await writer.stop()
    conn = await asyncpg.connect(pg_dsn)
    try:
        live = await conn.fetch("SELECT * FROM hub_job_run ORDER BY run_id")
        await history.rebuild(conn, nc.jetstream(), topology)
        rebuilt = await conn.fetch("SELECT * FROM hub_job_run ORDER BY run_id")
    finally:
        await conn.close()
    assert [dict(r) for r in rebuilt] == [dict(r) for r in live] and len(live) >= 2  # the manual runs


async def test_jobs_api_refuses_unknown_jobs_and_bad_queries(
    timed_hub: tuple[HubServer, Client, Offset],
) -> None:
    _, admin, _ = timed_hub
    assert (await admin.post(f"{A}/jobs/nope/run")).error == "not_found"
    assert (await admin.get(f"{A}/jobs/nope/runs")).error == "not_found"
    bad = await admin.get(f"{A}/jobs/key-expiry/runs?before=x")
    assert (bad.status, bad.error) == (400, "invalid_query")
    bad = await admin.get(f"{A}/jobs/key-expiry/runs?limit=0")
    assert (bad.status, bad.error) == (400, "invalid_query")


async def _runs(admin: Client, job: str, *, status: str) -> list[dict[str, Any]]:
    ans = await admin.get(f"{A}/jobs/{job}/runs")
    assert ans.status == 200, ans
    return [r for r in ans.json["items"] if r["status"] == status]


async def _ran_quietly(admin: Client, job: str) -> dict[str, Any] | None:
    """The job as listed once its first scheduled run (at start) is over:
    it found nothing to do, so it is counted, not in the history."""
    listed = {j["name"]: j for j in (await admin.get(f"{A}/jobs")).json["jobs"]}
    j = listed[job]
    return j if j["last_status"] == "succeeded" and j["quiet_runs"] >= 1 else None


async def _run(admin: Client, job: str, run_id: str, status: str) -> dict[str, Any] | None:
    for r in await _runs(admin, job, status=status):
        if r["run_id"] == run_id:
            return r
    return None


async def _job_actions(nc: NATS, topology: Topology) -> list[dict[str, Any]]:
    js = nc.jetstream()
    sub = await js.subscribe(topology.admin_subject("admin.action"), ordered_consumer=True)
    out = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except TimeoutError:
                break
            doc = msgspec.json.decode(msg.data)
            if doc.get("actor", "").startswith("system:job/"):
                out.append(doc)
    finally:
        await sub.unsubscribe()
    return out


async def test_override_expiry_removes_expired_passthrough_and_break_glass_entries_each_audited(
    timed_hub: tuple[HubServer, Client, Offset], nc: NATS, topology: Topology
) -> None:
    _, admin, clock = timed_hub
    now = dt.datetime.now(dt.UTC)
    reason = "incident 9: the provider rejects normalized bodies"
    hooks = (await admin.get(f"{A}/settings/hooks")).json
    hooks["passthrough"] = [
        {"scope": "provider", "target": "sim", "bypass_cache": True, "reason": reason,
         "set_at": now.isoformat(), "expires_at": (now + dt.timedelta(hours=1)).isoformat()},
        {"scope": "global", "bypass_hooks": True, "reason": reason,
         "set_at": now.isoformat(), "expires_at": (now + dt.timedelta(hours=6)).isoformat()},
    ]  # fmt: skip
    hooks["kill_switch"]["break_glass"] = [
        {"node": "gw-1", "reason": reason, "engaged_at": now.isoformat(),
         "until": (now + dt.timedelta(minutes=30)).isoformat()},
    ]  # fmt: skip
    put = await admin.put(f"{A}/settings/hooks", hooks)
    assert put.status == 200, put
    # The first scheduled run (at start) is over before the clock moves, so
    # the run asked for below is the one that finds the entries expired.
    await eventually(lambda: _ran_quietly(admin, "override-expiry"))
    # The first rule and the break-glass entry are over; a scheduled run is
    # due at once too: between them and the manual run, each entry goes once.
    clock.ms = 2 * 3600 * 1000
    asked = await admin.post(f"{A}/jobs/override-expiry/run")
    await eventually(lambda: _run(admin, "override-expiry", asked.json["run_id"], "succeeded"))
    total: Counter[str] = Counter()
    for r in await _runs(admin, "override-expiry", status="succeeded"):
        total.update(r["stats"])
    assert total == {"passthrough_expired": 1, "break_glass_expired": 1}, total
    after = (await admin.get(f"{A}/settings/hooks")).json
    assert [r["scope"] for r in after["passthrough"]] == ["global"]
    assert after["kill_switch"]["break_glass"] == []
    audited = [a for a in await _job_actions(nc, topology) if a["action"] == "job:override-expiry"]
    assert len(audited) == 2 and all(a["config_seq"] > 0 for a in audited)
    assert {a["resource"] for a in audited} == {"nrn:nexus:hub::settings/hooks"}
    # Nothing left to do: the next run changes nothing.
    again = await admin.post(f"{A}/jobs/override-expiry/run")
    rerun = await eventually(lambda: _run(admin, "override-expiry", again.json["run_id"], "succeeded"))
    assert rerun["stats"] == {}


async def test_vault_rewrap_runs_as_a_job_with_progress(nc: NATS, topology: Topology) -> None:
    from hub.control import ControlPlane
    from hub.jobs.standard import register_vault_rewrap
    from hub.store import ConfigStore
    from hub.vault.commands import AddVaultKey
    from hub.vault.service import VaultService, key_versions
    from streams.config_vault import CredentialSpec
    from streams.events import uuid7
    from streams.vault.keyring import new_version
    from streams.vault.keystore import KeyStore
    from streams.vault.master import new_master_key, parse_master_keys

    control = ControlPlane(ConfigStore(nc.jetstream(), topology))
    await control.start()
    vault = VaultService(
        control,
        KeyStore(nc.jetstream(), topology),
        parse_master_keys(f"k1:{new_master_key()}", "test"),
        rewrap_concurrency=4,
    )

    def env() -> dict[str, Any]:
        return {"id": uuid7(), "actor": "nrn:nexus:iam::user/admin", "at_ms": now_ms()}

    from tests.hub.conftest import import_config

    await import_config(control, demo_config())
    for i in range(60):
        spec = CredentialSpec(id=f"c{i}", provider="sim", org="")
        await vault.store(control.execute, env(), spec, f"sk-secret-value-{i:04d}-abcdef")
    # A new key version, without the rotation's own background pass: the job
    # does the rewrap.
    master = vault.master
    assert master is not None
    await control.execute(AddVaultKey(**env(), key=new_version(master, key_versions(control.state))))
    registry = Registry()
    register_vault_rewrap(registry, vault.rewrapper)
    sink = Sink()
    sched = Scheduler(
        registry,
        Bucket(nc.jetstream(), topology.jobs_bucket, ttl_s=0),
        control,
        sink,
        Node(kind="hub", id="a"),
        tick_s=0.05,
    )
    try:
        await sched.start()

        async def finished() -> JobRun | None:
            ends = [e for e in sink.events if isinstance(e, JobRun) and e.status != "running"]
            return ends[0] if ends else None

        end = await eventually(finished)
    finally:
        await sched.stop()
        await control.stop()
    assert end.status == "succeeded", end
    assert end.stats["rewrapped"] == 60 and end.stats["failed"] == 0, end.stats
    assert "rewrapped 60 data keys to version 2" in end.detail
    running = [e for e in sink.events if isinstance(e, JobRun) and e.status == "running"]
    assert running and all(set(e.stats) <= set(end.stats) for e in running)
    assert await vault.count_on(1) == 0


async def test_body_retention_purges_old_captured_bodies(
    timed_hub: tuple[HubServer, Client, Offset], pg_dsn: str
) -> None:
    from processors.audit.store import SCHEMA

    _, admin, _ = timed_hub
    await eventually(lambda: _ran_quietly(admin, "body-retention"))  # the one at start
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(SCHEMA)
        for event, age_days in (("old", 40), ("recent", 2)):
            await conn.execute(
                "INSERT INTO audit_body (event_id, path, content_type, sha256, data, stored_at)"
                " VALUES ($1, 'request', 'application/json', 'x', '\\x00'::bytea,"
                " now() - make_interval(days => $2))",
                event,
                age_days,
            )
        audit = (await admin.get(f"{A}/settings/audit")).json
        assert (await admin.put(f"{A}/settings/audit", {**audit, "body_retention_days": 30})).status == 200
        asked = await admin.post(f"{A}/jobs/body-retention/run")
        done = await eventually(lambda: _run(admin, "body-retention", asked.json["run_id"], "succeeded"))
        assert done["stats"]["bodies_purged"] == 1, done
        left = [r["event_id"] for r in await conn.fetch("SELECT event_id FROM audit_body")]
        assert left == ["recent"]
    finally:
        await conn.close()


async def test_enrolment_tokens_that_expired_unused_are_removed_and_certificates_reported(
    timed_hub: tuple[HubServer, Client, Offset], nc: NATS, topology: Topology
) -> None:
    _, admin, clock = timed_hub
    await eventually(lambda: _ran_quietly(admin, "enrolment-token-expiry"))  # the one at start
    short = await admin.post(f"{A}/enrolment-tokens", {"ttl_s": 3600, "description": "short"})
    long = await admin.post(f"{A}/enrolment-tokens", {"ttl_s": 6 * 24 * 3600, "description": "long"})
    assert short.status == 201 and long.status == 201, (short, long)
    clock.ms = 2 * 3600 * 1000  # the short one has expired, for the job
    asked = await admin.post(f"{A}/jobs/enrolment-token-expiry/run")
    await eventually(lambda: _run(admin, "enrolment-token-expiry", asked.json["run_id"], "succeeded"))
    total: Counter[str] = Counter()
    for r in await _runs(admin, "enrolment-token-expiry", status="succeeded"):
        total.update(r["stats"])
    assert total == {"expired_removed": 1}, total
    left = [t["id"] for t in (await admin.get(f"{A}/enrolment-tokens")).json["items"]]
    assert left == [long.json["item"]["id"]]
    audited = [a for a in await _job_actions(nc, topology) if a["action"] == "job:enrolment-token-expiry"]
    assert [a["resource"] for a in audited] == [
        f"nrn:nexus:fleet::enrolment-token/{short.json['item']['id']}"
    ]
    # Certificates: the agent CA (10 years) is reported once its end is near.
    clock.ms = (10 * 365 - 5) * 24 * 3600 * 1000
    asked = await admin.post(f"{A}/jobs/certificate-expiry/run")
    done = await eventually(lambda: _run(admin, "certificate-expiry", asked.json["run_id"], "succeeded"))
    assert done["stats"]["ca_expiring"] == 1 and "the agent CA ends in" in done["detail"], done


async def test_routine_runs_that_found_nothing_are_counted_not_recorded(nc: NATS, topology: Topology) -> None:
    """A scheduled run that did nothing leaves no admin.job_run record (the
    slot counts it); a failed run and a manual one are recorded."""
    from hub.control import ControlPlane
    from hub.jobs.registry import JobFailed
    from hub.store import ConfigStore

    control = ControlPlane(ConfigStore(nc.jetstream(), topology))
    await control.start()
    ran: Counter[str] = Counter()
    reg = Registry()

    async def idle(ctx: JobContext) -> str:
        ran["idle"] += 1
        ctx.idle = True
        return "nothing to do"

    async def broken(ctx: JobContext) -> str:
        ran["broken"] += 1
        ctx.idle = True  # a failure is recorded whatever the run said
        raise JobFailed("the store is away")

    reg.add("idle", every_s=0.1, run=idle)
    reg.add("broken", every_s=0.1, run=broken)
    sink = Sink()
    sched = Scheduler(
        reg, Bucket(nc.jetstream(), topology.jobs_bucket, ttl_s=0), control, sink, Node(kind="hub", id="a"),
        tick_s=0.05,
    )  # fmt: skip

    def records(job: str) -> list[JobRun]:
        return [e for e in sink.events if isinstance(e, JobRun) and e.job == job]

    async def ran_enough() -> bool:
        return ran["idle"] >= 5 and ran["broken"] >= 5

    try:
        await sched.start()
        await eventually(ran_enough)
        assert records("idle") == []
        failed = [e for e in records("broken") if e.status == "failed"]
        assert len(failed) >= ran["broken"] - 1 and failed[0].error == "the store is away"
        run_id = await sched.request("idle", "nrn:nexus:iam::user/admin")

        async def manual_ended() -> list[JobRun]:
            return [e for e in records("idle") if e.run_id == run_id and e.status == "succeeded"]

        (end,) = await eventually(manual_ended)
        assert end.trigger == "manual" and end.requested_by == "nrn:nexus:iam::user/admin"
        assert {e.run_id for e in records("idle")} == {run_id}  # its start and end, no other run
        await sched.stop()
        slot, _ = await sched.read_slot("idle")
    finally:
        await sched.stop()
        await control.stop()
    # The slot still says how many ran and when the last did.
    assert slot.quiet_runs == ran["idle"] - 1 and slot.runs == ran["idle"]
    assert slot.last_status == "succeeded" and slot.last_finished_ms >= slot.last_started_ms > 0


async def test_the_hubs_routine_jobs_add_no_admin_records_when_there_is_nothing_to_do(
    timed_hub: tuple[HubServer, Client, Offset], nc: NATS, topology: Topology
) -> None:
    """Key and override expiry, and the fleet's drift pass, due again and
    again on a Hub with nothing to expire or re-push: no admin.job_run record
    reaches the ADMIN stream; the jobs list shows their runs as before."""
    server, admin, clock = timed_hub
    assert server.scheduler is not None and server.audit is not None
    sched, audit, js = server.scheduler, server.audit, nc.jetstream()
    routine = ("key-expiry", "override-expiry", "thing-override-expiry", "fleet-drift")
    subject = topology.admin_subject("admin.job_run")

    async def job_runs_on_admin() -> int:
        info = await js.stream_info(topology.admin_stream, subjects_filter=subject)
        return sum((info.state.subjects or {}).values())

    async def runs() -> dict[str, int]:
        return {name: (await sched.read_slot(name))[0].runs for name in routine}

    async def settled(at_least: int) -> bool:
        return min((await runs()).values()) >= at_least and not sched.running

    await eventually(lambda: settled(1))
    assert await server.audit.flush(10.0)
    before = await job_runs_on_admin()
    for n in range(2, 5):
        clock.ms += 61_000  # every routine job is due again
        await eventually(lambda n=n: settled(n))  # type: ignore[misc]
    assert await server.audit.flush(10.0)
    assert await job_runs_on_admin() == before
    listed = {j["name"]: j for j in (await admin.get(f"{A}/jobs")).json["jobs"]}
    for name in routine:
        assert listed[name]["runs"] >= 4 and listed[name]["quiet_runs"] >= 3, listed[name]
        assert listed[name]["last_status"] == "succeeded" and listed[name]["last_started_at"]
    # A person's run of the same job is recorded.
    assert (await admin.post(f"{A}/jobs/key-expiry/run")).status == 202

    async def recorded() -> bool:
        await audit.flush(10.0)
        return await job_runs_on_admin() >= before + 2  # its start and its end

    await eventually(recorded)
