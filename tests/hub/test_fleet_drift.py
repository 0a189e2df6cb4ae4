"""The fleet's pure parts: the effective config (template ⊕ overrides), the
desired state and its version, convergence by content, and the drift
decision with an injected clock (re-pushed at most three times, then drift,
back to online by itself)."""

from __future__ import annotations

import msgspec
import pytest

from hub.commands import DomainError, Upsert
from hub.decide import decide
from hub.fleet.commands import ClearOverride, EnrolThing, RevokeThing, SetOverride
from hub.fleet.desired import converged, desired_of, effective_config, pending_keys
from hub.fleet.drift import Policy, SyncRecord, assess, status_of
from hub.state import THING, HubState, evolve
from streams.config_fleet import ThingSpec, ThingTemplate
from streams.fleet_wire import KeyOutcome, value_digest
from streams.snapshots import NodeReport, SnapshotHead

T0 = 1_700_000_000_000


def _run(state: HubState, cmd: object) -> HubState:
    event = decide(state, cmd)  # type: ignore[arg-type]
    assert event is not None
    return evolve(state, event, state.seq + 1)


def _env(n: int) -> dict[str, object]:
    return {"id": f"c{n}", "actor": "nrn:nexus:iam::user/admin", "at_ms": T0 + n}


@pytest.fixture
def state() -> HubState:
    s = HubState()
    s = _run(s, EnrolThing(**_env(1), spec=ThingSpec(id="a1", type="agent"), token_hash="ab" * 32))
    s = _run(
        s,
        Upsert(
            **_env(2),
            aggregate="thing-template",
            rid="agent",
            spec=ThingTemplate(type="agent", keys={"log_level": "info", "capture": False}),
        ),
    )
    return s


HEAD = SnapshotHead(
    revision=7, digest="d" * 64, config_digest="c" * 64, size=1, object="rev/7", published_at_ms=T0
)


def test_effective_config_is_the_template_with_the_things_overrides(state: HubState) -> None:
    thing = state.get(THING, "a1")
    assert thing is not None
    eff = effective_config(state, thing)
    assert {k: (e.value, e.source) for k, e in eff.items()} == {
        "capture": (False, "template"),
        "log_level": ("info", "template"),
    }
    s = _run(
        state,
        SetOverride(
            **_env(3), rid="a1", key="log_level", value="debug", reason="ticket 42", expires_at_ms=T0 + 60_000
        ),
    )
    thing = s.get(THING, "a1")
    assert thing is not None
    eff = effective_config(s, thing)
    assert eff["log_level"].value == "debug" and eff["log_level"].source == "override"
    assert eff["log_level"].reason == "ticket 42" and eff["log_level"].expires_at_ms == T0 + 60_000
    d = desired_of(s, thing, HEAD)
    # agents run snapshots: the snapshot is a key of their desired state
    assert d.keys["config"] == {"revision": 7, "digest": "c" * 64}
    assert d.version == max(thing.version, 7) and d.keys["log_level"] == "debug"
    s = _run(s, ClearOverride(**_env(4), rid="a1", key="log_level"))
    thing = s.get(THING, "a1")
    assert thing is not None and effective_config(s, thing)["log_level"].value == "info"


def test_override_rules(state: HubState) -> None:
    with pytest.raises(DomainError) as e:
        decide(state, SetOverride(**_env(3), rid="a1", key="log_level", value=1, reason=""))
    assert e.value.field == "reason"
    with pytest.raises(DomainError) as e:
        decide(state, SetOverride(**_env(3), rid="a1", key="Bad Key", value=1, reason="x"))
    assert e.value.field == "key"
    with pytest.raises(DomainError) as e:
        decide(state, SetOverride(**_env(3), rid="a1", key="config", value=1, reason="x"))
    assert e.value.field == "key"
    with pytest.raises(DomainError) as e:
        decide(state, SetOverride(**_env(3), rid="a1", key="k", value=1, reason="x", expires_at_ms=T0))
    assert e.value.field == "expires_at"
    with pytest.raises(DomainError) as e:
        decide(state, SetOverride(**_env(3), rid="nope", key="k", value=1, reason="x"))
    assert e.value.status == 404
    with pytest.raises(DomainError) as e:
        decide(state, EnrolThing(**_env(3), spec=ThingSpec(id="a1", type="agent")))
    assert e.value.code == "already_exists"
    with pytest.raises(DomainError) as e:
        decide(state, EnrolThing(**_env(3), spec=ThingSpec(id="x", type="toaster")))
    assert e.value.field == "type"
    s = _run(state, RevokeThing(**_env(3), rid="a1", reason="stolen"))
    with pytest.raises(DomainError) as e:
        decide(s, SetOverride(**_env(4), rid="a1", key="k", value=1, reason="x"))
    assert e.value.code == "invalid_transition"


def _report(
    desired_keys: dict[str, object], *, refuse: str = "", at: int = T0, config_digest: str = ""
) -> NodeReport:
    outcomes = {
        k: KeyOutcome(status="failed", error="refused")
        if k == refuse
        else KeyOutcome(status="applied", digest=value_digest(v))
        for k, v in desired_keys.items()
        if k != "config"
    }
    return NodeReport(
        node_kind="agent", node_id="a1", reported_at_ms=at, digest=config_digest, outcomes=outcomes
    )


def test_convergence_compares_what_runs_not_a_version(state: HubState) -> None:
    thing = state.get(THING, "a1")
    assert thing is not None
    d = desired_of(state, thing, HEAD)
    assert pending_keys(d, None) == ["capture", "config", "log_level"]
    assert converged(d, _report(d.keys, config_digest="c" * 64))
    # the same keys, but it serves another config than the published one
    assert pending_keys(d, _report(d.keys, config_digest="e" * 64)) == ["config"]
    assert pending_keys(d, _report(d.keys, refuse="capture", config_digest="c" * 64)) == ["capture"]
    # a value it applied that is not the desired one
    stale = msgspec.structs.replace(
        _report(d.keys, config_digest="c" * 64),
        outcomes={
            "capture": KeyOutcome(status="applied", digest=value_digest(True)),
            "log_level": KeyOutcome(status="applied", digest=value_digest("info")),
        },
    )
    assert pending_keys(d, stale) == ["capture"]


def test_three_repushes_then_drift_then_recovery_by_itself(state: HubState) -> None:
    thing = state.get(THING, "a1")
    assert thing is not None
    d = desired_of(state, thing, HEAD)
    policy = Policy(repush_after_s=10)
    refusing = _report(d.keys, refuse="capture", config_digest="c" * 64)
    now = T0
    rec, action = assess(d, refusing, SyncRecord(), pending=True, now_ms=now, policy=policy)
    assert action == "track" and rec.version == d.version and rec.pushes == 0
    actions = []
    for _ in range(20):
        now += 5_000
        refusing = msgspec.structs.replace(refusing, reported_at_ms=now)  # it keeps beating
        rec, action = assess(d, refusing, rec, pending=True, now_ms=now, policy=policy)
        if action:
            actions.append(action)
    assert actions == ["repush", "repush", "repush", "drift"]
    assert rec.pushes == 3 and rec.drift
    assert status_of(thing, refusing, rec, now) == "drift"
    # its report catches up: online again, without anyone doing anything
    good = _report(d.keys, config_digest="c" * 64, at=now)
    rec, action = assess(d, good, rec, pending=False, now_ms=now, policy=policy)
    assert action == "recovered" and not rec.drift and rec.pushes == 0
    assert status_of(thing, good, rec, now) == "online"


def test_status_from_heartbeats(state: HubState) -> None:
    thing = state.get(THING, "a1")
    assert thing is not None
    assert status_of(thing, None, None, T0) == "enrolled"
    beat = NodeReport(node_kind="agent", node_id="a1", reported_at_ms=T0, heartbeat_s=15)
    assert status_of(thing, beat, None, T0 + 45_000) == "online"  # two missed, the third due
    assert status_of(thing, beat, None, T0 + 45_001) == "offline"  # three missed
    # an offline thing is not re-pushed (it gets its state when it is back)
    d = desired_of(state, thing, HEAD)
    rec = SyncRecord(version=d.version, pushed_at_ms=T0)
    assert assess(d, beat, rec, pending=True, now_ms=T0 + 60_000, policy=Policy()) == (rec, None)
    s = _run(state, RevokeThing(**_env(3), rid="a1"))
    revoked = s.get(THING, "a1")
    assert revoked is not None and status_of(revoked, beat, None, T0) == "revoked"


def test_a_new_desired_version_ends_drift_and_counts_again(state: HubState) -> None:
    thing = state.get(THING, "a1")
    assert thing is not None
    d = desired_of(state, thing, HEAD)
    drifted = SyncRecord(version=d.version - 1, pushes=3, drift=True)
    beat = _report(d.keys, refuse="capture", at=T0, config_digest="c" * 64)
    rec, action = assess(d, beat, drifted, pending=True, now_ms=T0, policy=Policy())
    assert action == "track" and not rec.drift and rec.pushes == 0
