"""The event-sourced control state on a real JetStream: commands become one
event each on the aggregate's subject, retries apply once, concurrent edits
of one item give exactly one conflict, and the state is the fold of the
stream (a restarted Hub has the same one)."""

from __future__ import annotations

import asyncio
import datetime as dt

import msgspec
import pytest
from nats.aio.client import Client as NATS

from hub.commands import ChangeKeyStatus, Create, Delete, DomainError, IssueKey, Replace, RotateKey, Upsert
from hub.compile import compile_config
from hub.control import ControlPlane
from hub.importer import plan
from hub.state import HubState, fold
from hub.store import ConfigStore
from streams.config import Org, Project
from streams.config_hub import KeySpec
from streams.events import now_ms, uuid7
from streams.keys import hash_key, new_key
from streams.topology import Topology
from tests.hub.conftest import demo_config, import_config

pytestmark = pytest.mark.integration

SECRET = b"nexus-demo-secret-do-not-use-in-production"


def env(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {"id": uuid7(), "actor": "nrn:nexus:iam::user/admin", "at_ms": now_ms()}
    base.update(kw)
    return base


async def test_import_of_the_demo_compiles_back_to_the_file(control: ControlPlane) -> None:
    cfg = demo_config()
    stored = await import_config(control, cfg)
    assert stored == 18  # org, project, provider, 3 models, 3 prices, auth, key, rule, 3 hooks, 3 quotas
    compiled, _ = compile_config(control.state)
    assert compiled == cfg
    # Idempotent: the same file again is an empty plan and stores nothing.
    assert plan(control.state, cfg) == []
    assert await import_config(control, cfg) == 0


async def test_a_restarted_hub_folds_the_stream_to_the_same_state(
    control: ControlPlane, nc: NATS, topology: Topology
) -> None:
    await import_config(control, demo_config())
    other = ControlPlane(ConfigStore(nc.jetstream(), topology))
    await other.start()
    try:
        assert other.state == control.state
        assert other.state.seq == control.state.seq == 18
    finally:
        await other.stop()


async def test_every_event_lands_on_its_aggregates_subject(
    control: ControlPlane, nc: NATS, topology: Topology
) -> None:
    await control.execute(Create(**env(), aggregate="org", spec=Org(id="acme.eu", name="Acme EU")))  # type: ignore[arg-type]
    js = nc.jetstream()
    msg = await js.get_last_msg(topology.config_stream, topology.config_subject("org", "acme.eu"))
    assert msg.subject == f"{topology.subject_root}.config.org.acme%2Eeu"
    assert msg.headers is not None and msg.headers["Nats-Msg-Id"]
    assert msgspec.json.decode(msg.data)["type"] == "resource.created"


class LaggingReplica(ControlPlane):
    """A replica whose follower starts only when told: it has not seen what
    the other replica just wrote."""

    def __init__(self, store: ConfigStore) -> None:
        super().__init__(store)
        self.go = asyncio.Event()

    async def _follow(self) -> None:
        await self.go.wait()
        await super()._follow()


async def test_a_retried_command_applies_once(control: ControlPlane, nc: NATS, topology: Topology) -> None:
    other = LaggingReplica(ConfigStore(nc.jetstream(), topology))
    await other.start()
    try:
        cmd = Create(**env(), aggregate="org", spec=Org(id="acme"))  # type: ignore[arg-type]
        first = await control.execute(cmd)
        again = await control.execute(cmd)
        assert again.replayed and again.seq == first.seq
        # A second Hub replica that gets the same command (a client retrying
        # on another node) before it has seen the first: JetStream's
        # duplicate window answers with the first one's sequence.
        assert other.state.seq == 0
        other.go.set()
        out = await other.execute(cmd)
        assert out.replayed and out.seq == first.seq
    finally:
        await other.stop()
    assert (await nc.jetstream().stream_info(topology.config_stream)).state.messages == 1


async def test_two_replicas_editing_one_item_at_once_get_exactly_one_conflict(
    control: ControlPlane, nc: NATS, topology: Topology
) -> None:
    await control.execute(Create(**env(), aggregate="org", spec=Org(id="acme", name="Acme")))  # type: ignore[arg-type]
    other = ControlPlane(ConfigStore(nc.jetstream(), topology))
    await other.start()
    try:
        version = control.state.version_of("org", "acme")
        a = Replace(
            **env(expected_version=version), aggregate="org", rid="acme", spec=Org(id="acme", name="A")
        )  # type: ignore[arg-type]
        b = Replace(
            **env(expected_version=version), aggregate="org", rid="acme", spec=Org(id="acme", name="B")
        )  # type: ignore[arg-type]
        results = await asyncio.gather(control.execute(a), other.execute(b), return_exceptions=True)
        errors = [r for r in results if isinstance(r, DomainError)]
        assert len(errors) == 1, results
        assert errors[0].status == 409 and errors[0].code == "version_conflict"
        winner = "A" if isinstance(results[1], DomainError) else "B"
        await control.catch_up()
        await other.catch_up()
        for cp in (control, other):
            res = cp.state.get("org", "acme")
            assert res is not None and res.spec.name == winner
            assert errors[0].current_version == res.version
    finally:
        await other.stop()


async def test_two_replicas_editing_different_items_both_succeed(
    control: ControlPlane, nc: NATS, topology: Topology
) -> None:
    other = ControlPlane(ConfigStore(nc.jetstream(), topology))
    await other.start()
    try:
        cmds = [Create(**env(), aggregate="org", spec=Org(id=f"o{i}")) for i in range(10)]  # type: ignore[arg-type]
        await asyncio.gather(*(cp.execute(c) for cp, c in zip([control, other] * 5, cmds, strict=True)))
        await control.catch_up()
        assert sorted(r.id for r in control.state.all("org")) == sorted(f"o{i}" for i in range(10))
    finally:
        await other.stop()


async def test_a_change_that_breaks_the_config_is_refused_naming_the_field(control: ControlPlane) -> None:
    await import_config(control, demo_config())
    spec = KeySpec(id="k1", org="demo-org", project="nope")
    with pytest.raises(DomainError) as bad:
        await control.execute(IssueKey(**env(), spec=spec, hash="a" * 64, prefix="nvk_aaaaaaaa"))  # type: ignore[arg-type]
    assert (bad.value.status, bad.value.code, bad.value.field) == (422, "invalid_field", "project")
    # Deleting what something still needs is a 409 naming the dependant.
    with pytest.raises(DomainError) as used:
        await control.execute(Delete(**env(), aggregate="project", rid="demo-project"))  # type: ignore[arg-type]
    assert used.value.status == 409 and "demo-key" in used.value.message
    with pytest.raises(DomainError) as priced:
        await control.execute(Delete(**env(), aggregate="model", rid="gpt-4o"))  # type: ignore[arg-type]
    assert priced.value.status == 409 and "price" in priced.value.message
    with pytest.raises(DomainError) as fixed:
        await control.execute(
            Replace(**env(), aggregate="settings", rid="hooks", spec=demo_config().hooks)  # type: ignore[arg-type]
        )
    assert fixed.value.field == "pipeline"


async def test_the_key_lifecycle(control: ControlPlane) -> None:
    await import_config(control, demo_config())
    old_key, new = new_key(), new_key()
    spec = KeySpec(id="k1", org="demo-org", project="demo-project", allowed_models=("gpt-4o",))
    await control.execute(
        IssueKey(**env(), spec=spec, hash=hash_key(old_key, SECRET), prefix=old_key[:12], status="pending")  # type: ignore[arg-type]
    )
    with pytest.raises(DomainError) as pending:
        await control.execute(RotateKey(**env(), rid="k1", hash="b" * 64, prefix="x", grace_until_ms=0))  # type: ignore[arg-type]
    assert pending.value.code == "invalid_transition"
    await control.execute(ChangeKeyStatus(**env(), rid="k1", status="approved"))  # type: ignore[arg-type]
    grace_end = now_ms() + 60_000
    await control.execute(
        RotateKey(**env(), rid="k1", hash=hash_key(new, SECRET), prefix=new[:12], grace_until_ms=grace_end)  # type: ignore[arg-type]
    )
    cfg, _ = compile_config(control.state)
    vk = next(k for k in cfg.virtual_keys if k.id == "k1")
    assert vk.status == "active" and vk.hash == hash_key(new, SECRET)
    assert vk.previous_hash == hash_key(old_key, SECRET)
    assert vk.previous_hash_expires_at == dt.datetime.fromtimestamp(grace_end / 1000, tz=dt.UTC)
    await control.execute(ChangeKeyStatus(**env(), rid="k1", status="revoked", reason="left the company"))  # type: ignore[arg-type]
    with pytest.raises(DomainError) as revoked:
        await control.execute(ChangeKeyStatus(**env(), rid="k1", status="approved"))  # type: ignore[arg-type]
    assert revoked.value.code == "invalid_transition"
    # A key's org is fixed at issue.
    res = control.state.get("virtual-key", "demo-key")
    assert res is not None
    moved = msgspec.structs.replace(res.spec, org="other")
    with pytest.raises(DomainError) as fixed:
        await control.execute(Replace(**env(), aggregate="virtual-key", rid="demo-key", spec=moved))  # type: ignore[arg-type]
    assert fixed.value.field == "org"


async def test_events_it_cannot_read_are_skipped_and_counted(
    control: ControlPlane, nc: NATS, topology: Topology
) -> None:
    js = nc.jetstream()
    await control.execute(Upsert(**env(), aggregate="org", rid="acme", spec=Org(id="acme")))  # type: ignore[arg-type]
    subject = topology.config_subject("org", "x")
    await js.publish(subject, b'{"type":"org.merged","aggregate":"org","aggregate_id":"x"}')
    await js.publish(subject, b"not json")
    bad_spec = b'{"type":"resource.created","aggregate":"org","aggregate_id":"x","spec":{"id":"x","bogus":1}}'
    await js.publish(subject, bad_spec)
    await js.publish(
        subject, b'{"type":"resource.created","aggregate":"galaxy","aggregate_id":"x","spec":{}}'
    )
    state = await asyncio.wait_for(control.catch_up(), 10)
    assert state.skipped == 4
    assert [r.id for r in state.all("org")] == ["acme"]
    # ... and the fold of the stream agrees.
    raw = [item async for item in control.store.read(1, until=state.seq)]
    assert fold(HubState(), raw) == state
    # The Hub still takes commands after them.
    out = await control.execute(Create(**env(), aggregate="project", spec=Project(id="p", org="acme")))  # type: ignore[arg-type]
    assert out.seq == state.seq + 1
