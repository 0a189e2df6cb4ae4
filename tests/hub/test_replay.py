"""Must-show 8: ``nexus replay hub`` rebuilds the Hub's read model identical
to the live one.  The live rows are written incrementally while commands
run (creates, edits, deletes, a re-created id, the key lifecycle); the
command then drops them and rebuilds from the CONFIG stream; the tables are
compared row by row."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import asyncpg
import msgspec
import pytest

from hub.commands import ChangeKeyStatus, Create, Delete, IssueKey, Replace, RotateKey, Upsert
from hub.control import ControlPlane
from hub.readmodel import ReadModelWriter
from streams.config import Org, Project
from streams.config_hub import KeyBudget, KeySpec
from streams.events import now_ms, uuid7
from streams.topology import Topology
from tests.hub.conftest import Client, RunningHub, demo_config, import_config
from tests.hub.test_iam_matrix import NARROW

A = "/api/admin"

pytestmark = pytest.mark.integration


def env() -> dict[str, object]:
    return {"id": uuid7(), "actor": "nrn:nexus:iam::user/admin", "at_ms": now_ms()}


async def rows(dsn: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        res = await conn.fetch("SELECT * FROM hub_resource ORDER BY aggregate, id")
        cp = await conn.fetch("SELECT projection, stream, seq FROM hub_checkpoint ORDER BY projection")
    finally:
        await conn.close()
    return [dict(r) for r in res] + [dict(r) for r in cp]


async def test_replay_hub_rebuilds_the_live_read_model(
    control: ControlPlane, topology: Topology, pg_dsn: str, nats_url: str
) -> None:
    writer = ReadModelWriter(pg_dsn, topology.config_stream, interval_s=0.0)
    control.on_change(writer.changed)
    await writer.start()
    try:
        await import_config(control, demo_config())
        await writer.wait_synced(control.state.seq)  # a first batch, then many small ones
        await control.execute(Create(**env(), aggregate="org", spec=Org(id="acme", timezone="Europe/Paris")))  # type: ignore[arg-type]
        await control.execute(Create(**env(), aggregate="org", spec=Org(id="eu", parent="acme")))  # type: ignore[arg-type]
        await control.execute(Create(**env(), aggregate="project", spec=Project(id="p1", org="eu")))  # type: ignore[arg-type]
        await control.execute(
            Replace(**env(), aggregate="org", rid="eu", spec=Org(id="eu", parent="acme", name="Europe"))  # type: ignore[arg-type]
        )
        spec = KeySpec(
            id="k1",
            org="eu",
            project="p1",
            budgets=(KeyBudget(limit=5.0, window="day"),),
            allowed_models=("gpt-4o",),
        )
        await control.execute(
            IssueKey(**env(), spec=spec, hash="c" * 64, prefix="nvk_cccccccc", status="pending")
        )  # type: ignore[arg-type]
        await control.execute(ChangeKeyStatus(**env(), rid="k1", status="approved"))  # type: ignore[arg-type]
        await control.execute(
            RotateKey(
                **env(), rid="k1", hash="d" * 64, prefix="nvk_dddddddd", grace_until_ms=now_ms() + 10_000
            )
        )  # type: ignore[arg-type]
        await control.execute(Create(**env(), aggregate="org", spec=Org(id="gone")))  # type: ignore[arg-type]
        await control.execute(Delete(**env(), aggregate="org", rid="gone"))  # type: ignore[arg-type]
        await control.execute(Upsert(**env(), aggregate="org", rid="gone", spec=Org(id="gone", name="back")))  # type: ignore[arg-type]
        await control.execute(ChangeKeyStatus(**env(), rid="demo-key", status="revoked"))  # type: ignore[arg-type]
        await control.execute(Delete(**env(), aggregate="hook", rid="pii-redact"))  # type: ignore[arg-type]
        await writer.wait_synced(control.state.seq)
    finally:
        await writer.stop()
    live = await rows(pg_dsn)
    assert any(r.get("id") == "k1" and r["status"] == "active" for r in live)
    assert not any(r.get("aggregate") == "hook" and r.get("id") == "pii-redact" for r in live)
    # Secrets are not in the read model.
    key_row = next(r for r in live if r.get("id") == "k1")
    assert "d" * 64 not in key_row["item"] and "c" * 64 not in key_row["item"]
    assert msgspec.json.decode(key_row["item"])["key"]["prefix"] == "nvk_dddddddd"

    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "nexus.cli", "replay", "hub", "--nats", nats_url, "--prefix", topology.prefix],
        env={**os.environ, "NEXUS_POSTGRES_DSN": pg_dsn},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"up to CONFIG sequence {control.state.seq}" in proc.stdout
    assert await rows(pg_dsn) == live


def test_replay_hub_without_a_dsn_says_so() -> None:
    env_ = {k: v for k, v in os.environ.items() if k != "NEXUS_POSTGRES_DSN"}
    proc = subprocess.run(
        [sys.executable, "-m", "nexus.cli", "replay", "hub"],
        env=env_,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "no Postgres DSN" in proc.stderr


async def test_replay_hub_rebuilds_the_read_model_of_a_running_hub(
    hub: RunningHub, admin: Client, pg_dsn: str, nats_url: str, topology: Topology
) -> None:
    """The same, end to end: the read model the running Hub wrote while its
    admin API was used (every kind of item, their edits, memberships and
    attachments, the key lifecycle, deletes) against the one ``nexus
    replay hub`` rebuilds from the stream alone."""
    steps = [
        ("POST", "/orgs", {"id": "acme", "timezone": "Europe/Paris"}),
        ("POST", "/orgs", {"id": "acme-eu", "parent": "acme"}),
        ("PATCH", "/orgs/acme-eu", {"name": "Acme Europe"}),
        ("POST", "/projects", {"id": "web", "org": "acme-eu"}),
        ("POST", "/users", {"id": "ann", "email": "ann@example.com", "org": "acme", "projects": ["web"]}),
        ("PUT", "/users/ann/password", {"password": "a-long-enough-password"}),
        ("POST", "/groups", {"id": "ops", "org": "acme"}),
        ("POST", "/groups/ops/members", {"user": "ann"}),
        ("POST", "/policies", {"id": "read-acme", "org": "acme", "document": NARROW}),
        ("POST", "/policies/read-acme/attach", {"principal": "user/ann", "org": "acme"}),
        ("POST", "/policies/read-acme/attach", {"principal": "group/ops", "org": "acme"}),
        ("POST", "/policies/read-acme/detach", {"principal": "group/ops", "org": "acme"}),
        ("POST", "/providers", {"name": "other", "base_url": "https://api.example.com/v1"}),
        ("POST", "/models", {"name": "m1", "provider": "other"}),
        ("POST", "/prices", {"model": "m1", "input": 1.0}),
        ("PATCH", "/prices/m1", {"output": 2.0}),
        (
            "POST",
            "/routing-rules",
            {"name": "r1", "match": ["fast"], "strategy": {"type": "single", "model": "m1"}},
        ),
        ("POST", "/hooks", {"id": "h1", "type": "noop", "stage": "request"}),
        ("DELETE", "/hooks/pii-redact", None),
        ("POST", "/quotas", {"kind": "rate_limit", "id": "q1", "match": {"org": "acme"}, "rpm": 10}),
    ]
    for method, path, body in steps:
        ans = await admin.call(method, A + path, body)
        assert ans.status < 300, (method, path, ans)
    made = await admin.post(
        f"{A}/virtual-keys", {"org": "acme-eu", "project": "web", "allowed_models": ["m1"]}
    )
    kid = made.json["item"]["id"]
    assert (await admin.post(f"{A}/virtual-keys/{kid}/rotate", {"grace_seconds": 60})).status == 200
    assert (await admin.post(f"{A}/virtual-keys/{kid}/revoke", {})).status == 200
    assert (await admin.delete(f"{A}/virtual-keys/{kid}")).status == 204
    other = await admin.post(f"{A}/virtual-keys", {"org": "acme-eu", "project": "web"})
    assert (
        await admin.patch(f"{A}/virtual-keys/{other.json['item']['id']}", {"description": "d"})
    ).status == 200
    assert hub.server.readmodel is not None
    await hub.server.readmodel.wait_synced(hub.control.state.seq)
    live = await rows(pg_dsn)
    kinds = {r["aggregate"] for r in live if "aggregate" in r}
    assert kinds >= {
        "org",
        "project",
        "user",
        "group",
        "policy",
        "provider",
        "model",
        "price",
        "hook",
        "quota",
    }, kinds
    assert any(r.get("id") == "ann" for r in live)
    assert "a-long-enough-password" not in str(live)
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "nexus.cli", "replay", "hub", "--nats", nats_url, "--prefix", topology.prefix],
        env={**os.environ, "NEXUS_POSTGRES_DSN": pg_dsn},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rebuilt = await rows(pg_dsn)
    assert len(rebuilt) == len(live)
    assert rebuilt == live
