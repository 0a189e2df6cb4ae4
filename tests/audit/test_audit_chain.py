"""The audit trail against real NATS and Postgres: events published through
the real publisher land hash-chained in Postgres; ``nexus audit verify``
(run as the real CLI) passes on a clean log and names the first broken
record after tampering, deletion or a body edit; purging bodies by policy
keeps the chain intact; redelivery never duplicates a record."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import io
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS
from prometheus_client import CollectorRegistry

from processors.audit import AuditProcessor, start_audit, store, verify
from processors.audit import cli as audit_cli
from processors.audit.chain import GENESIS, build_record, chain_hash, verify_run
from streams import codec, deadletter, retention
from streams.config_siem import AuditConfig
from streams.events import Body, Node, RequestCompleted, RequestFailed, RequestReceived, Tenant, UsageRecorded
from streams.jetstream import ensure_streams
from streams.spill import SpillStore
from streams.topology import Topology

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _events(n: int) -> list[msgspec.Struct]:
    out: list[msgspec.Struct] = []
    for i in range(n):
        tenant = Tenant(org_id=f"org{i % 3}", project_id="p", key_id=f"k{i % 5}")
        node = Node(kind="gateway", id="g1")
        kind = i % 4
        if kind == 0:
            body = Body(inline=f'{{"messages":[{{"role":"user","content":"hi {i}"}}]}}'.encode(), size=30)
            out.append(RequestReceived(request_id=f"r{i}", tenant=tenant, node=node, path="/v1/x", body=body))
        elif kind == 1:
            out.append(UsageRecorded(request_id=f"r{i}", tenant=tenant, node=node, cost_usd=0.001 * i))
        elif kind == 2:
            out.append(RequestCompleted(request_id=f"r{i}", tenant=tenant, node=node, latency_ms=12.5))
        else:
            out.append(RequestFailed(request_id=f"r{i}", tenant=tenant, node=node, status=502, reason="x"))
    return out


async def _publish(nats_url: str, topology: Topology, tmp: Path, events: list[msgspec.Struct]) -> None:
    # Published the way the publisher does (subject per type, Nats-Msg-Id =
    # event id), awaiting each ack.  streams.publisher.Publisher.flush() can
    # return before its batch is acknowledged (see the report), so the tests
    # do not rely on it.
    nc = await nats.connect(nats_url)
    try:
        jsc = nc.jetstream()
        for e in events:
            await jsc.publish(topology.subject_for(e), codec.encode(e), headers={"Nats-Msg-Id": e.id})  # type: ignore[attr-defined]
    finally:
        await nc.close()


async def _last_seq(nats_url: str, topology: Topology) -> int:
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().stream_info(topology.traffic_stream)
        return int(info.state.last_seq)
    finally:
        await nc.close()


async def _cli(*args: str, subprocess: bool = False) -> tuple[int, str]:
    """``nexus audit ...``: as a real subprocess through ``nexus.cli``, or
    (faster) the same command function run in a thread."""
    if subprocess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "nexus.cli",
            "audit",
            *args,
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode()
    buf = io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            return audit_cli.main(list(args))

    code = await asyncio.to_thread(run)
    return code, buf.getvalue()


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_url)
    yield client
    await client.close()


@pytest.fixture
async def js(nc: NATS, topology: Topology) -> AsyncIterator[nats.js.JetStreamContext]:
    jsc = nc.jetstream()
    await ensure_streams(jsc, topology)
    yield jsc
    for name in [spec.name for spec in topology.streams()] + [deadletter.stream_name(topology)]:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await jsc.delete_stream(name)


async def _recorded(
    nc: NATS, pg_dsn: str, topology: Topology, nats_url: str, tmp: Path, n: int
) -> CollectorRegistry:
    """Publish ``n`` events and run the processor until all are recorded."""
    await _publish(nats_url, topology, tmp, _events(n))
    registry = CollectorRegistry()
    proc = AuditProcessor(nc, pg_dsn, topology, registry=registry)
    await proc.start()
    try:
        async with asyncio.timeout(15):
            last = await _last_seq(nats_url, topology)
            await proc.wait_for(topology.traffic_stream, last)
    finally:
        await proc.stop()
    return registry


def test_chain_pure_rules() -> None:
    r1, _ = build_record(n=1, prev_hash=GENESIS, stream="S", stream_seq=1, raw=b'{"id":"a","type":"t"}')
    r2, _ = build_record(n=2, prev_hash=r1.hash, stream="S", stream_seq=2, raw=b'{"id":"b","type":"t"}')
    assert r2.hash == chain_hash(r1.hash, r2.content)
    assert verify_run([r1, r2], first_n=1, prev_hash=GENESIS) == (2, None)
    # Swapping two records (reordering) breaks at the first one.
    checked, brk = verify_run([r2, r1], first_n=1, prev_hash=GENESIS)
    assert checked == 0 and brk is not None and brk.n == 1
    swapped = [msgspec.structs.replace(r2, n=1), msgspec.structs.replace(r1, n=2)]
    checked, brk = verify_run(swapped, first_n=1, prev_hash=GENESIS)
    assert checked == 0 and brk is not None and "prev_hash" in brk.reason
    # Garbage is recorded too, by its digest.
    r3, _ = build_record(n=3, prev_hash=r2.hash, stream="S", stream_seq=3, raw=b"\xff not json")
    assert r3.event_type == "undecodable" and '"sha256"' in r3.content


async def test_clean_log_verifies_and_cli_passes(
    nc: NATS, js: nats.js.JetStreamContext, pg_dsn: str, topology: Topology, nats_url: str, tmp_path: Path
) -> None:
    registry = await _recorded(nc, pg_dsn, topology, nats_url, tmp_path, 40)
    labels = {"stream": topology.traffic_stream}
    assert registry.get_sample_value("nexus_audit_records_total", labels) == 40
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch(
            "SELECT n, stream_seq, event_type, org_id, content::text AS c FROM audit_log ORDER BY n"
        )
        assert [r["n"] for r in rows] == list(range(1, 41))
        assert [r["stream_seq"] for r in rows] == list(range(1, 41))
        assert rows[0]["event_type"] == "request.received" and rows[0]["org_id"] == "org0"
        # The chain covers the body's digest, never the body itself.
        assert "hi 0" not in rows[0]["c"] and '"sha256"' in rows[0]["c"]
        assert await conn.fetchval("SELECT count(*) FROM audit_body") == 10
        result = await verify(conn)
        assert result.ok and result.checked == 40 and result.bodies_checked == 10
    finally:
        await conn.close()
    code, out = await _cli("verify", "--dsn", pg_dsn, subprocess=True)
    assert code == 0, out
    assert "audit chain OK: records 1-40" in out
    code, out = await _cli("verify", "--dsn", pg_dsn, "--from", "5", "--to", "20")
    assert code == 0 and "records 5-20 (16 checked" in out, out
    code, out = await _cli("verify", "--dsn", pg_dsn, "--from", "31", "--to", "500")
    assert code == 0 and "records 31-40 (10 checked" in out, out


async def test_altered_row_is_named(
    nc: NATS, js: nats.js.JetStreamContext, pg_dsn: str, topology: Topology, nats_url: str, tmp_path: Path
) -> None:
    await _recorded(nc, pg_dsn, topology, nats_url, tmp_path, 30)
    conn = await asyncpg.connect(pg_dsn)
    try:
        event_id = await conn.fetchval("SELECT event_id FROM audit_log WHERE n = 17")
        # Someone lowers a recorded cost / changes a status in the chained content.
        await conn.execute(
            "UPDATE audit_log SET content = replace(content::text, '\"r16\"', '\"r99\"')::json WHERE n = 17"
        )
    finally:
        await conn.close()
    code, out = await _cli("verify", "--dsn", pg_dsn)
    assert code == 1, out
    assert f"BROKEN at record 17 (event {event_id}, stream seq 17)" in out
    assert "record altered" in out
    # A range that ends before the tampered record still verifies.
    code, out = await _cli("verify", "--dsn", pg_dsn, "--to", "16")
    assert code == 0, out


async def test_altered_column_and_rehashed_row_are_detected(
    nc: NATS, js: nats.js.JetStreamContext, pg_dsn: str, topology: Topology, nats_url: str, tmp_path: Path
) -> None:
    await _recorded(nc, pg_dsn, topology, nats_url, tmp_path, 12)
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("UPDATE audit_log SET org_id = 'someone-else' WHERE n = 4")
        result = await verify(conn)
        assert result.broken is not None and result.broken.n == 4
        assert "column org_id" in result.broken.reason
        await conn.execute("UPDATE audit_log SET org_id = 'org0' WHERE n = 4")
        assert (await verify(conn)).ok
        # A careful forger rewrites content AND recomputes that row's hash:
        # the next record no longer links to it.
        row = await conn.fetchrow("SELECT content::text AS c, prev_hash FROM audit_log WHERE n = 6")
        forged = row["c"].replace('"org2"', '"org1"')
        await conn.execute(
            "UPDATE audit_log SET content = $1::json, org_id = 'org1', hash = $2 WHERE n = 6",
            forged,
            chain_hash(bytes(row["prev_hash"]), forged),
        )
        result = await verify(conn)
        assert result.broken is not None and result.broken.n == 7
        assert "record 6's hash" in result.broken.reason
    finally:
        await conn.close()


async def test_deleted_rows_are_detected(
    nc: NATS, js: nats.js.JetStreamContext, pg_dsn: str, topology: Topology, nats_url: str, tmp_path: Path
) -> None:
    await _recorded(nc, pg_dsn, topology, nats_url, tmp_path, 20)
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("DELETE FROM audit_log WHERE n = 10")
        result = await verify(conn)
        assert result.broken is not None and result.broken.n == 10
        assert "missing" in result.broken.reason
        assert result.checked == 9
        # Deleting the newest records is caught by the chain head.
        await conn.execute("DELETE FROM audit_log WHERE n >= 10")
        result = await verify(conn)
        assert result.broken is not None and result.broken.n == 10 and "missing" in result.broken.reason
    finally:
        await conn.close()
    code, out = await _cli("verify", "--dsn", pg_dsn)
    assert code == 1 and "BROKEN at record 10: missing (records 10-20 deleted)" in out, out


async def test_body_purge_keeps_chain_and_body_edit_is_detected(
    nc: NATS, js: nats.js.JetStreamContext, pg_dsn: str, topology: Topology, nats_url: str, tmp_path: Path
) -> None:
    # A spilled body lives in the spill store; a fresh one survives a purge.
    spill = SpillStore(js, topology.spill_bucket)
    ref = await spill.put(b"x" * 300_000)
    await _recorded(nc, pg_dsn, topology, nats_url, tmp_path, 16)
    conn = await asyncpg.connect(pg_dsn)
    try:
        first = await conn.fetchrow("SELECT event_id, path FROM audit_body ORDER BY event_id LIMIT 1")
        await conn.execute(
            "UPDATE audit_body SET data = $1 WHERE event_id = $2", b'{"messages":"forged"}', first["event_id"]
        )
        result = await verify(conn)
        assert result.broken is not None and "body altered" in result.broken.reason
        await conn.execute(
            "UPDATE audit_body SET stored_at = now() - interval '40 days' WHERE event_id = $1",
            first["event_id"],
        )
        proc = AuditProcessor(nc, pg_dsn, topology, config=AuditConfig(body_retention_days=30))
        await proc.start()
        bodies, spilled = await proc.purge()
        await proc.stop()
        assert (bodies, spilled) == (1, 0)
        assert await conn.fetchval("SELECT count(*) FROM audit_body") == 3
        result = await verify(conn)
        assert result.ok and result.checked == 16 and result.bodies_checked == 3
    finally:
        await conn.close()
    assert await spill.get(ref) == b"x" * 300_000


async def test_redelivery_and_restart_never_duplicate(
    nc: NATS, js: nats.js.JetStreamContext, pg_dsn: str, topology: Topology, nats_url: str, tmp_path: Path
) -> None:
    await _recorded(nc, pg_dsn, topology, nats_url, tmp_path, 10)
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
    try:
        # The same messages delivered again (a lost ack): nothing appended.
        msgs = [(seq, (await js.get_msg(topology.traffic_stream, seq)).data or b"") for seq in range(1, 11)]
        again = await store.append(
            pool, consumer="nexus_audit", stream=topology.traffic_stream, messages=msgs, store_bodies=True
        )
        assert again == 0
        # A new instance resumes from the checkpoint; the chain continues,
        # and an event type this processor has never seen is recorded as is.
        verdict = {
            "type": "verdict.recorded",
            "id": "0190-verdict-1",
            "tenant": {"org_id": "org9"},
            "decision": "block",
            "body": {"inline": base64.b64encode(b"secret prompt").decode(), "size": 13},
        }
        await js.publish(topology.traffic_subject("verdict.recorded"), msgspec.json.encode(verdict))
        await _recorded(nc, pg_dsn, topology, nats_url, tmp_path, 5)
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM audit_log") == 16
            assert await conn.fetchval("SELECT count(DISTINCT stream_seq) FROM audit_log") == 16
            row = await conn.fetchrow(
                "SELECT n, org_id, content::text AS c FROM audit_log WHERE event_type = 'verdict.recorded'"
            )
            assert row["n"] == 11 and row["org_id"] == "org9"
            assert "secret prompt" not in row["c"] and '"decision":"block"' in row["c"]
            assert (await verify(conn)).ok
            ts = await conn.fetchval("SELECT occurred_at FROM audit_log WHERE n = 1")
            assert abs(ts - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)
    finally:
        await pool.close()


async def test_failing_postgres_holds_the_batch_and_the_chain_stays_in_order(
    js: nats.js.JetStreamContext, pg_dsn: str, topology: Topology, nats_url: str, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    # Started the way `nexus up` embeds it.
    assert (await start_audit(nats_url, pg_dsn, topology, AuditConfig(enabled=False)))[0] is None
    proc, stop = await start_audit(nats_url, pg_dsn, topology, registry=registry)
    assert proc is not None
    conn = await asyncpg.connect(pg_dsn)
    try:
        await _publish(nats_url, topology, tmp_path, _events(20))
        async with asyncio.timeout(15):
            await proc.wait_for(topology.traffic_stream, 20)
        # Every append now fails inside Postgres (a real error, not a mock).
        await conn.execute("ALTER TABLE audit_log ADD CONSTRAINT frozen CHECK (n <= 20) NOT VALID")
        await _publish(nats_url, topology, tmp_path, _events(30))
        labels = {"stream": topology.traffic_stream}
        async with asyncio.timeout(15):
            while not registry.get_sample_value("nexus_audit_failures_total", labels):
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        assert await conn.fetchval("SELECT count(*) FROM audit_log") == 20
        await conn.execute("ALTER TABLE audit_log DROP CONSTRAINT frozen")
        async with asyncio.timeout(20):
            await proc.wait_for(topology.traffic_stream, 50)
        rows = await conn.fetch("SELECT n, stream_seq FROM audit_log ORDER BY n")
        assert [(r["n"], r["stream_seq"]) for r in rows] == [(i, i) for i in range(1, 51)]
        assert (await verify(conn)).ok
    finally:
        await stop()
        await conn.close()


async def test_a_fenced_writer_never_appends_and_the_chain_survives_a_takeover(
    nc: NATS, js: nats.js.JetStreamContext, pg_dsn: str, topology: Topology, nats_url: str, tmp_path: Path
) -> None:
    proc = AuditProcessor(nc, pg_dsn, topology, registry=CollectorRegistry())
    await proc.start()
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
    try:
        await _publish(nats_url, topology, tmp_path, _events(10))
        async with asyncio.timeout(15):
            await proc.wait_for(topology.traffic_stream, 10)
        # A successor claims the chain (as after a lost lock connection):
        # an append under the old epoch is refused, nothing is written.
        successor = await store.claim_writer(pool)
        msg = await js.get_msg(topology.traffic_stream, 10)
        with pytest.raises(store.Fenced):
            await store.append(
                pool,
                consumer="other",
                stream=topology.traffic_stream,
                messages=[(10, msg.data or b"")],
                store_bodies=False,
                epoch=successor - 1,
            )
        # The running instance is fenced on its next batch, stands by, takes
        # the chain back (nobody else holds the lock) and resumes from its
        # checkpoint: every event recorded once, the chain intact.
        await _publish(nats_url, topology, tmp_path, _events(15))
        async with asyncio.timeout(20):
            await proc.wait_for(topology.traffic_stream, 25)
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM audit_log") == 25
            result = await verify(conn)
            assert result.ok and result.checked == 25
            assert await conn.fetchval("SELECT epoch FROM audit_chain") > successor
    finally:
        await proc.stop()
        await pool.close()


async def test_purging_a_spilled_body_keeps_the_chain(
    nc: NATS, js: nats.js.JetStreamContext, pg_dsn: str, topology: Topology, nats_url: str, tmp_path: Path
) -> None:
    spill = SpillStore(js, topology.spill_bucket)
    big = b"y" * 400_000
    ref = await spill.put(big)
    event = RequestReceived(request_id="big", body=Body(ref=ref, size=len(big)))
    await _publish(nats_url, topology, tmp_path, [event])
    await _recorded(nc, pg_dsn, topology, nats_url, tmp_path, 3)
    await asyncio.sleep(1.1)
    purged = await retention.purge_spill(js, topology.spill_bucket, older_than=dt.timedelta(seconds=1))
    assert purged == 1
    with pytest.raises(Exception):  # noqa: B017 - the object store's own "not found"
        await spill.get(ref)
    conn = await asyncpg.connect(pg_dsn)
    try:
        content = await conn.fetchval("SELECT content::text FROM audit_log WHERE request_id = 'big'")
        assert ref.sha256 in content  # the digest stays chained
        result = await verify(conn)
        assert result.ok and result.checked == 4
    finally:
        await conn.close()


async def test_nexus_audit_run_process_records_and_stops_cleanly(
    js: nats.js.JetStreamContext, pg_dsn: str, topology: Topology, nats_url: str, tmp_path: Path
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nexus.cli",
        "audit",
        "run",
        "--dsn",
        pg_dsn,
        "--nats",
        nats_url,
        "--prefix",
        topology.prefix,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            line = await proc.stdout.readline()
        assert b"recording" in line and topology.traffic_stream.encode() in line, line
        await _publish(nats_url, topology, tmp_path, _events(12))
        conn = await asyncpg.connect(pg_dsn)
        try:
            async with asyncio.timeout(20):
                while await conn.fetchval("SELECT count(*) FROM audit_log") < 12:
                    await asyncio.sleep(0.1)
        finally:
            await conn.close()
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    code, out = await _cli("verify", "--dsn", pg_dsn)
    assert code == 0 and "records 1-12" in out, out
    code, out = await _cli("purge", "--dsn", pg_dsn, "--nats", nats_url, "--prefix", topology.prefix)
    assert code == 0 and "purged 0 stored bodies and 0 spilled objects" in out, out


async def test_a_delivery_lost_in_flight_is_read_again_not_skipped(
    nc: NATS, js: nats.js.JetStreamContext, pg_dsn: str, topology: Topology, nats_url: str, tmp_path: Path
) -> None:
    """A message the server delivered but the processor never received (a
    connection lost with it in flight) must not be skipped: committing the
    messages after it would move the checkpoint past it and acknowledge it
    (AckPolicy ALL).  The loss is injected at the one place it shows: a
    fetched batch with the message missing."""
    await _publish(nats_url, topology, tmp_path, _events(30))
    registry = CollectorRegistry()
    proc = AuditProcessor(nc, pg_dsn, topology, registry=registry)
    real_fetch = proc._fetch_batch
    dropped: list[int] = []

    async def lossy(psub: object) -> list[object]:
        msgs = await real_fetch(psub)  # type: ignore[arg-type]
        if not dropped and len(msgs) > 3:
            dropped.append(3)
            return [m for i, m in enumerate(msgs) if i != 3]  # the 4th never arrived
        return msgs  # type: ignore[return-value]

    proc._fetch_batch = lossy  # type: ignore[method-assign,assignment]
    await proc.start()
    try:
        async with asyncio.timeout(30):
            await proc.wait_for(topology.traffic_stream, 30)
    finally:
        await proc.stop()
    assert dropped, "the injected loss never happened"
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch("SELECT n, stream_seq FROM audit_log ORDER BY n")
        assert [(r["n"], r["stream_seq"]) for r in rows] == [(i, i) for i in range(1, 31)]
        assert (await verify(conn)).ok
    finally:
        await conn.close()
    assert registry.get_sample_value("nexus_audit_failures_total", {"stream": topology.traffic_stream})


async def test_nothing_that_arrives_stops_the_chain(
    nc: NATS, js: nats.js.JetStreamContext, pg_dsn: str, topology: Topology
) -> None:
    """Poison of every kind a faulty or hostile producer can put on the
    stream is recorded (exactly, or as a digest), the chain stays gap-free
    and verifies, and a value Postgres still refuses is recorded as an
    ``unstorable`` digest with its original on the dead-letter subject."""
    subject = topology.traffic_subject("request.received")
    big_id = "e" * 5000  # over a B-tree row: the indexed column holds its digest
    raws = [
        b'{"type":"request.received","id":"nul","request_id":"r\\u0000x","tenant":{"org_id":"o\\u0000"}}',
        b'{"type":"request.received","id":"utf8","request_id":"r\xff\xfe"}',
        b'{"type":"request.received","id":"sur","request_id":"r\\ud800"}',
        b'{"type":"request.received","id":"%s","request_id":"big"}' % big_id.encode(),
        b'{"type":"request.received","id":"time","occurred_at_ms":100000000000000000000}',
        b'{"a":' * 5000 + b"1" + b"}" * 5000,
        b'{"type":"request.received","id":"refused","request_id":"refuse-me"}',
        b'{"type":"request.received","id":"fine","request_id":"after"}',
    ]
    conn = await asyncpg.connect(pg_dsn)
    try:
        # A value this database refuses (a data exception, class 22, raised
        # by a trigger as a domain check or an extension would).
        await store.ensure_schema(conn)
        await conn.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.request_id = 'refuse-me' THEN RAISE EXCEPTION 'value refused' USING ERRCODE = '22023'; "
            "END IF; RETURN NEW; END $$"
        )
        await conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION refuse()"
        )
        for i, raw in enumerate(raws):
            await js.publish(subject, raw, headers={"Nats-Msg-Id": f"poison-{i}"})
        proc = AuditProcessor(nc, pg_dsn, topology, registry=CollectorRegistry())
        await proc.start()
        try:
            async with asyncio.timeout(20):
                await proc.wait_for(topology.traffic_stream, len(raws))
        finally:
            await proc.stop()
        rows = await conn.fetch(
            "SELECT n, stream_seq, event_id, event_type, request_id, org_id FROM audit_log ORDER BY n"
        )
        assert [(r["n"], r["stream_seq"]) for r in rows] == [(i, i) for i in range(1, len(raws) + 1)]
        by_seq = {r["stream_seq"]: r for r in rows}
        assert (by_seq[1]["request_id"], by_seq[1]["org_id"]) == ("r\ufffdx", "o\ufffd")
        assert by_seq[2]["event_type"] == "undecodable"  # not UTF-8
        assert by_seq[3]["event_type"] == "undecodable"  # a lone surrogate
        assert by_seq[4]["event_id"].startswith("e" * 256 + "…sha256:") and len(by_seq[4]["event_id"]) < 400
        assert by_seq[6]["event_type"] == "undecodable"  # 5,000 levels deep
        assert by_seq[7]["event_type"] == "unstorable"
        assert by_seq[8]["request_id"] == "after"
        await conn.execute("DROP TRIGGER refuse ON audit_log")
        result = await verify(conn)
        assert result.ok, result
    finally:
        await conn.close()
    [dl] = await deadletter.entries(js, topology, consumer="audit")
    assert dl.stream_seq == 7 and dl.data == raws[6] and "value refused" in dl.reason
