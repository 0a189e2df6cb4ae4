"""Each rule on real streams: block/redact decisions over a window
(hook.stage), a node that stops beating and comes back (the heartbeat
bucket; PagerDuty triggered then resolved under one incident key), a SIEM
sink's dead letter, and ``nexus audit verify --publish`` finding a break."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator

import asyncpg
import msgspec
import pytest
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig

from hub.fleet.drift import SyncRecord
from processors.alerts.worker import AlertsWorker
from processors.audit import AuditProcessor
from processors.audit import cli as audit_cli
from streams import deadletter, heartbeat
from streams.config_alerts import (
    AlertsConfig,
    AuditChainRule,
    BlockRateRule,
    NodeDriftRule,
    NodeOfflineRule,
    PagerDutyChannel,
    SiemDeadLetterRule,
    WebhookChannel,
)
from streams.events import Node, RequestCompleted, Tenant
from streams.events_compliance import StageDecision
from streams.snapshots import report_key
from streams.topology import Topology
from tests.alerts.receivers import HttpReceiver
from tests.alerts.support import publish, wait_for

pytestmark = pytest.mark.integration

ENV = {"T_WEBHOOK_SECRET": "s3cret-signing-key", "T_PD_KEY": "R0UTINGKEY0123456789abcdefABCDEF"}


def _hook(url: str) -> WebhookChannel:
    return WebhookChannel(
        name="ops", url=url, signing_secret_env="T_WEBHOOK_SECRET", allow_private_network=True
    )


@pytest.fixture
async def pagerduty() -> AsyncIterator[HttpReceiver]:
    r = await HttpReceiver("pagerduty").start()
    yield r
    await r.stop()


def _stage(decision: str, org: str, at_ms: int) -> StageDecision:
    return StageDecision(
        stage="request",
        decision=decision,
        blocking_hook="pii" if decision != "approve" else "",
        reason_code="pii_detected" if decision != "approve" else "",
        occurred_at_ms=at_ms,
        tenant=Tenant(org_id=org, key_id="k1"),
    )


async def test_block_rate_over_a_window_fires_once_per_org(
    js: JetStreamContext, topology: Topology, nats_url: str, webhook: HttpReceiver
) -> None:
    cfg = AlertsConfig(
        channels=(_hook(webhook.url),),
        rules=(
            BlockRateRule(
                name="blocks",
                decisions=("block", "redact"),
                window_s=60,
                min_count=3,
                per="org",
                channels=("ops",),
            ),
        ),
    )
    worker = AlertsWorker(nats_url, topology, cfg, env=ENV)
    await worker.start()
    t0 = int(time.time() * 1000)
    try:
        # acme: two blocks, an approval, a redaction 30 s later -> 3 in 60 s: fires.
        # beta: three blocks spread over 3 minutes -> never 3 in one window.
        for ev in (
            _stage("block", "acme", t0),
            _stage("block", "acme", t0 + 1000),
            _stage("approve", "acme", t0 + 2000),
            _stage("block", "beta", t0),
            _stage("block", "beta", t0 + 70_000),
            _stage("redact", "acme", t0 + 30_000),
            _stage("block", "beta", t0 + 140_000),
            _stage("block", "acme", t0 + 31_000),  # still above: suppressed as a duplicate
        ):
            await publish(js, topology, ev)
        # Poison on the subject: dead-lettered as the worker's, never blocking the rest.
        await js.publish(
            topology.traffic_subject("hook.stage"), b"{not an event", headers={"Nats-Msg-Id": "p1"}
        )
        await wait_for(lambda: len(webhook.got) >= 1)
        await asyncio.sleep(1.0)  # the beta events and the duplicate have been read by now
    finally:
        await worker.stop()
    assert [r.doc["subject"] for r in webhook.got] == ["org:acme"]
    [dl] = await deadletter.entries(js, topology, consumer="alerts")
    assert dl.code == "undecodable" and dl.data == b"{not an event"
    doc = webhook.got[0].doc
    assert doc["details"]["count"] == "3" and doc["details"]["total"] == "4"
    assert doc["details"]["last_hook"] == "pii" and doc["severity"] == "warning"


async def test_a_node_that_stops_beating_pages_and_resolves_when_it_returns(
    js: JetStreamContext, topology: Topology, nats_url: str, pagerduty: HttpReceiver
) -> None:
    now = [time.time()]
    cfg = AlertsConfig(
        channels=(
            PagerDutyChannel(
                name="pager", url=pagerduty.url, routing_key_env="T_PD_KEY", allow_private_network=True
            ),
        ),
        rules=(NodeOfflineRule(name="nodes", missed_beats=3, channels=("pager",)),),
    )
    kv = await heartbeat.bucket(js, topology)
    gw = Node(kind="gateway", id="gw-1")
    started = int(now[0] * 1000) - 60_000

    async def beat(at_s: float) -> None:
        await kv.put(
            heartbeat.key(gw),
            heartbeat.encode(
                heartbeat.Heartbeat("gateway", "gw-1", started, int(at_s * 1000), interval_s=5.0)
            ),
        )

    await beat(now[0])
    worker = AlertsWorker(nats_url, topology, cfg, env=ENV, clock=lambda: now[0], node_check_s=0.1)
    await worker.start()
    try:
        await asyncio.sleep(0.5)
        assert pagerduty.got == []  # beating: nothing
        now[0] += 16.0  # three 5 s beats missed (the clock is the worker's, injected)
        await wait_for(lambda: len(pagerduty.got) >= 1)
        await beat(now[0])  # it is back
        await wait_for(lambda: len(pagerduty.got) >= 2)
    finally:
        await worker.stop()
    trigger, resolve = (r.doc for r in pagerduty.got)
    assert [r.error for r in pagerduty.got] == ["", ""]
    assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"] == "nexus:nodes:gateway/gw-1"
    assert trigger["payload"]["severity"] == "error" and "16 s" in trigger["payload"]["summary"]


async def test_a_thing_in_drift_alerts_and_resolves_when_it_converges(
    js: JetStreamContext, topology: Topology, nats_url: str, webhook: HttpReceiver
) -> None:
    # The sync records as the Hub's fleet writes them (hub.fleet.drift): the
    # test pins the contract between the two.
    kv = await js.create_key_value(KeyValueConfig(bucket=topology.fleet_sync_bucket, history=1))
    cfg = AlertsConfig(
        channels=(_hook(webhook.url),), rules=(NodeDriftRule(name="drift", channels=("ops",)),)
    )

    async def record(thing: str, **kw: object) -> None:
        rec = SyncRecord(thing=thing, version=7, **kw)  # type: ignore[arg-type]
        await kv.put(report_key("t", thing), msgspec.json.encode(rec))

    await record("gw-1", pushes=1, converged_at_ms=1)
    await record("laptop-42", pushes=3, drift=True, drift_since_ms=1_765_000_000_000)
    worker = AlertsWorker(nats_url, topology, cfg, env=ENV, node_check_s=0.1)
    await worker.start()
    try:
        await wait_for(lambda: len(webhook.got) >= 1)
        await record("laptop-42", converged_at_ms=2)  # it caught up
        await wait_for(lambda: len(webhook.got) >= 2)
        await asyncio.sleep(0.5)
    finally:
        await worker.stop()
    drifted, converged = (r.doc for r in webhook.got)
    assert [r.error for r in webhook.got] == ["", ""] and len(webhook.got) == 2
    assert drifted["subject"] == "thing/laptop-42" and drifted["status"] == "firing"
    assert drifted["details"]["repushes"] == "3" and drifted["details"]["desired_version"] == "7"
    assert converged["subject"] == "thing/laptop-42" and converged["status"] == "resolved"


async def test_a_siem_dead_letter_raises_an_alert_naming_the_sink(
    js: JetStreamContext, topology: Topology, nats_url: str, webhook: HttpReceiver
) -> None:
    cfg = AlertsConfig(
        channels=(_hook(webhook.url),), rules=(SiemDeadLetterRule(name="siem", channels=("ops",)),)
    )
    worker = AlertsWorker(nats_url, topology, cfg, env=ENV)
    await worker.start()
    try:
        event = RequestCompleted(request_id="r1")
        # Another consumer's dead letter (the projections'): not a SIEM one.
        await deadletter.DeadLetters(js, topology, "projections").put(
            stream=topology.traffic_stream,
            seq=7,
            subject_=topology.subject_for(event),
            data=b"{}",
            code="invalid",
            reason="does not match its type",
        )
        await deadletter.DeadLetters(js, topology, "siem_splunk").put(
            stream=topology.traffic_stream,
            seq=8,
            subject_=topology.subject_for(event),
            data=b"{}",
            code="rejected",
            reason="HTTP 400",
        )
        await wait_for(lambda: len(webhook.got) >= 1)
        await asyncio.sleep(0.5)
    finally:
        await worker.stop()
    [doc] = [r.doc for r in webhook.got]
    assert doc["subject"] == "siem/splunk" and doc["details"]["code"] == "rejected"
    assert doc["details"]["reason"] == "HTTP 400" and doc["details"]["stream_seq"] == "8"
    assert "nexus deadletters list --consumer siem_splunk" in doc["summary"]


async def test_audit_verify_publish_reports_a_break_and_the_alert_goes_out(
    js: JetStreamContext, topology: Topology, nats_url: str, pg_dsn: str, webhook: HttpReceiver
) -> None:
    # A real chain: events recorded by the audit processor, then one altered.
    for i in range(5):
        await publish(js, topology, RequestCompleted(request_id=f"r{i}", tenant=Tenant(org_id="acme")))
    nc = js._nc
    proc = AuditProcessor(nc, pg_dsn, topology)
    await proc.start()
    try:
        info = await js.stream_info(topology.traffic_stream)
        async with asyncio.timeout(20):
            await proc.wait_for(topology.traffic_stream, int(info.state.last_seq))
    finally:
        await proc.stop()
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(
            "UPDATE audit_log SET content = replace(content::text, '\"r2\"', '\"r9\"')::json WHERE n = 3"
        )
    finally:
        await conn.close()
    cfg = AlertsConfig(
        channels=(_hook(webhook.url),), rules=(AuditChainRule(name="chain", channels=("ops",)),)
    )
    worker = AlertsWorker(nats_url, topology, cfg, env=ENV)
    await worker.start()
    try:
        out = io.StringIO()

        def verify() -> int:
            with contextlib.redirect_stdout(out):
                return audit_cli.main(
                    ["verify", "--dsn", pg_dsn, "--publish", "--nats", nats_url, "--prefix", topology.prefix]
                )

        code = await asyncio.to_thread(verify)
        await wait_for(lambda: len(webhook.got) >= 1)
    finally:
        await worker.stop()
    assert (
        code == 1
        and "BROKEN at record 3" in out.getvalue()
        and "published audit.verified (broken)" in out.getvalue()
    )
    [doc] = [r.doc for r in webhook.got]
    assert doc["rule_kind"] == "audit_chain" and doc["details"]["broken_n"] == "3"
    assert doc["severity"] == "critical" and "altered" in doc["summary"]
