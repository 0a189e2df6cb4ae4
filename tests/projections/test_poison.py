"""Poison events against the real projector (Postgres and DuckDB on one
lane): every kind the stores can reject reaches the dead-letter subject with
its reason, the lane goes on, replay goes on, and an operator lists and
re-drives them with ``nexus deadletters``.

Each kind is a message as a faulty or hostile producer would put it on the
stream (the gateway answers the NUL model 404 and records it): raw bytes,
not events built through msgspec, which would refuse some of them."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import duckdb
import pytest
from nats.js import JetStreamContext
from prometheus_client import REGISTRY

from projections.projector import Projector
from projections.replay import replay
from projections.settings import ProjectorSettings
from streams import catalog, deadletter
from streams.codec import encode
from streams.events import RequestReceived, Tenant, Usage, UsageRecorded
from streams.topology import Topology
from tests.projections.helpers import T0, ok_request, publish, publish_raw

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _received(rid: str, model: str) -> bytes:
    ev = RequestReceived(
        request_id=rid,
        occurred_at_ms=T0,
        tenant=Tenant(org_id="org-p"),
        endpoint="chat",
        requested_model=model,
    )
    return encode(ev)


def _raw_received(rid: str, model_json: bytes) -> bytes:
    """A request.received whose model is the given JSON string literal."""
    return (
        b'{"type":"request.received","id":"ev-%s","occurred_at_ms":%d,"request_id":"%s",'
        b'"endpoint":"chat","requested_model":%s}' % (rid.encode(), T0, rid.encode(), model_json)
    )


# kind -> (the raw message, the code, its disposition, what the row must show)
_OVERSIZED_ID = os.urandom(2000).hex()  # 4,000 characters, incompressible: over a B-tree row
POISON: dict[str, tuple[bytes, str, str]] = {
    "nul": (_received("p-nul", "gpt-4o-mini\x00"), "nul_character", deadletter.SANITISED),
    "surrogate": (_raw_received("p-sur", b'"gpt-4o-\\ud800mini"'), "invalid_surrogate", deadletter.SANITISED),
    "utf8": (_raw_received("p-utf", b'"gpt-4o-\xff\xfemini"'), "invalid_utf8", deadletter.SANITISED),
    "out_of_range": (
        encode(
            UsageRecorded(
                request_id="p-big",
                occurred_at_ms=T0,
                model="m",
                usage=Usage(prompt_tokens=2**64, completion_tokens=1, total_tokens=2**64 + 1),
            )
        ),
        "out_of_range",
        deadletter.SKIPPED,
    ),
    "oversized": (_received(_OVERSIZED_ID, "gpt-4o-mini"), "oversized", deadletter.SKIPPED),
    "undecodable": (b"{not json at all", "undecodable", deadletter.SKIPPED),
    "schema": (
        b'{"type":"request.completed","id":"ev-schema","request_id":"p-schema","status":"two hundred"}',
        "invalid",
        deadletter.SKIPPED,
    ),
    "unknown_type": (
        b'{"type":"request.teleported","id":"ev-tp","request_id":"p-tp"}',
        "unknown_type",
        "skipped",
    ),
    "new_version": (
        b'{"type":"request.completed","id":"ev-v2","v":2,"request_id":"p-v2","status":200,"latency_ms":5.0}',
        "unsupported_version",
        deadletter.SKIPPED,
    ),
}


async def _pg_rows(dsn: str) -> dict[str, dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        return {r["request_id"]: dict(r) for r in await conn.fetch("SELECT * FROM traffic_event")}
    finally:
        await conn.close()


def _duck_rows(path: str) -> dict[str, dict[str, Any]]:
    conn = duckdb.connect(path, read_only=True)
    try:
        cur = conn.execute("SELECT * FROM traffic_event")
        names = [d[0] for d in cur.description]
        return {r[0]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}
    finally:
        conn.close()


def _cli(topology: Topology, nats_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "nexus.cli",
            "deadletters",
            "--nats-url",
            nats_url,
            "--stream-prefix",
            topology.prefix,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


async def test_poison_of_every_kind_is_dead_lettered_and_the_lane_and_replay_go_on(
    js: JetStreamContext, topology: Topology, settings: ProjectorSettings, nats_url: str
) -> None:
    assert settings.postgres_dsn and settings.duckdb_path
    await publish(js, topology, ok_request(1))
    seq_of: dict[str, int] = {}
    subject = topology.traffic_subject("request.received")
    for kind, (raw, _, _) in POISON.items():
        ack = await js.publish(subject, raw, headers={"Nats-Msg-Id": f"poison-{kind}"})
        seq_of[kind] = ack.seq
    last = await publish(js, topology, ok_request(2))

    async with Projector(settings) as projector:
        async with asyncio.timeout(20):
            await projector.wait_for(last)  # the lane went past every poison message

    letters = await deadletter.entries(js, topology, consumer="projections")
    by_seq = {(d.stream_seq, d.code): d for d in letters}
    for kind, (raw, code, disposition) in POISON.items():
        dl = by_seq.get((seq_of[kind], code))
        assert dl is not None, (
            f"{kind}: no dead letter with code {code} (got {[(d.stream_seq, d.code) for d in letters]})"
        )
        assert dl.disposition == disposition, kind
        assert dl.data == raw, f"{kind}: the original bytes are kept"
        assert dl.reason and dl.subject == subject and dl.stream == topology.traffic_stream
    # Counted in metrics, by code.
    for kind, (_, code, disposition) in POISON.items():
        assert REGISTRY.get_sample_value(
            "nexus_dead_letters_total", {"consumer": "projections", "code": code, "disposition": disposition}
        ), kind

    pg, duck = await _pg_rows(settings.postgres_dsn), _duck_rows(settings.duckdb_path)
    for rows in (pg, duck):
        # The requests on either side of the poison are whole.
        assert rows["req-000001"]["status"] == 200 and rows["req-000002"]["status"] == 200
        # What a store cannot hold is stored with U+FFFD in its place.
        assert rows["p-nul"]["requested_model"] == "gpt-4o-mini\ufffd"
        assert rows["p-sur"]["requested_model"] == "gpt-4o-\ufffdmini"
        assert rows["p-utf"]["requested_model"] == "gpt-4o-\ufffd\ufffdmini"
        assert "p-big" not in rows and "p-schema" not in rows and "p-tp" not in rows
        assert rows.get("p-v2", {}).get("status") is None
    # The 4,000-character request id is over Postgres's index limit; DuckDB holds it.
    assert _OVERSIZED_ID not in pg and _OVERSIZED_ID in duck
    oversized = by_seq[(seq_of["oversized"], "oversized")]
    assert "postgres" in oversized.reason and "index row size" in oversized.reason

    # Replay goes through the same poison: it finishes, and rebuilds the
    # same rows (its dead letters are the same entries, not new ones).
    before = len(letters)
    rebuilt = await replay(settings)
    assert rebuilt == {"postgres": last, "duckdb": last}
    assert await _pg_rows(settings.postgres_dsn) == pg
    assert _duck_rows(settings.duckdb_path) == duck
    assert len(await deadletter.entries(js, topology, consumer="projections")) == before

    # The operator lists them ...
    listed = _cli(topology, nats_url, "list", "--consumer", "projections", "--json")
    assert listed.returncode == 0, listed.stderr
    codes = {json.loads(line)["code"] for line in listed.stdout.splitlines()}
    assert codes == {code for _, code, _ in POISON.values()}
    shown = _cli(topology, nats_url, "show", str(by_seq[(seq_of["unknown_type"], "unknown_type")].dlq_seq))
    assert shown.returncode == 0 and "request.teleported" in shown.stdout


async def test_a_dead_letter_is_redriven_after_the_consumer_learns_to_read_it(
    js: JetStreamContext,
    topology: Topology,
    settings: ProjectorSettings,
    nats_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert settings.postgres_dsn
    raw_v2 = POISON["new_version"][0]
    await js.publish(topology.traffic_subject("request.received"), _received("p-v2", "m"))
    await js.publish(topology.traffic_subject("request.completed"), raw_v2)
    last = await publish(js, topology, ok_request(3))
    async with Projector(settings) as projector:
        async with asyncio.timeout(20):
            await projector.wait_for(last)
        assert (await _pg_rows(settings.postgres_dsn))["p-v2"]["status"] is None
        [dl] = await deadletter.entries(js, topology, consumer="projections", code="unsupported_version")

        # The upgrade: this consumer now reads request.completed v2 (an
        # upcaster would lift it; v2 here has the same fields).
        monkeypatch.setitem(catalog.SCHEMA_VERSIONS, "request.completed", 2)
        done = _cli(topology, nats_url, "redrive", str(dl.dlq_seq))
        assert done.returncode == 0, done.stderr
        assert "1 re-driven" in done.stdout
        info = await js.stream_info(topology.traffic_stream)
        async with asyncio.timeout(20):
            await projector.wait_for(info.state.last_seq)
        row = (await _pg_rows(settings.postgres_dsn))["p-v2"]
        assert row["status"] == 200 and row["outcome"] == "completed"
    # Gone from the dead letters once back on its stream.
    assert await deadletter.entries(js, topology, consumer="projections") == []


async def test_a_redrive_that_still_fails_is_recorded_again(
    js: JetStreamContext, topology: Topology, settings: ProjectorSettings, nats_url: str
) -> None:
    await publish_raw(js, topology.traffic_subject("request.received"), b"{broken", "broken-1")
    last = await publish(js, topology, ok_request(4))
    async with Projector(settings) as projector:
        async with asyncio.timeout(20):
            await projector.wait_for(last)
        [first] = await deadletter.entries(js, topology, consumer="projections")
        done = _cli(topology, nats_url, "redrive", "--all", "--consumer", "projections")
        assert done.returncode == 0, done.stderr
        info = await js.stream_info(topology.traffic_stream)
        async with asyncio.timeout(20):
            await projector.wait_for(info.state.last_seq)
    [again] = await deadletter.entries(js, topology, consumer="projections")
    assert again.dlq_seq != first.dlq_seq and again.data == first.data
    assert again.stream_seq == info.state.last_seq  # the re-driven copy
    purged = _cli(topology, nats_url, "purge", "--all")
    assert purged.returncode == 0 and "1 dead letter(s) deleted" in purged.stdout
    assert await deadletter.entries(js, topology) == []
