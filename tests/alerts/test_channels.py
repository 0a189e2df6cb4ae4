"""Must-show 7: each alert channel delivers to a real local receiver.

The worker runs against the real NATS; the source events are published on
the real traffic stream; the receivers are real servers that check what
the real services would (the webhook's HMAC and replay window, Slack's
text and blocks, PagerDuty Events v2's fields, an SMTP server requiring
STARTTLS and AUTH).  Duplicates are suppressed, a channel's rate limit is
honoured, a dead or refusing receiver's failure is recorded with its reason
in the delivery log (Postgres), which a replay rebuilds identically.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from processors.alerts.log import DeliveryLog, replay
from processors.alerts.worker import AlertsWorker
from streams.config_alerts import (
    AlertsConfig,
    AuditChainRule,
    BudgetRule,
    EmailChannel,
    PagerDutyChannel,
    SlackChannel,
    WebhookChannel,
)
from streams.events import Tenant
from streams.events_alerts import AlertDelivery, AlertRaised, AuditVerified
from streams.events_quota import QuotaAlert
from streams.topology import Topology
from tests.alerts.receivers import HttpReceiver
from tests.alerts.smtp import SmtpReceiver
from tests.alerts.support import events_of, metric, publish, wait_for, wait_for_events

pytestmark = pytest.mark.integration

SECRETS = {
    "T_WEBHOOK_SECRET": "s3cret-signing-key",
    "T_SLACK_URL": "",  # set per test: the Slack URL is a secret
    "T_PD_KEY": "R0UTINGKEY0123456789abcdefABCDEF",  # 32 characters, as PagerDuty's
    "T_SMTP_PASSWORD": "smtp-pass-word",
}


@pytest.fixture
async def receivers(tmp_path: Path) -> AsyncIterator[dict[str, HttpReceiver]]:
    out = {
        "webhook": await HttpReceiver("webhook", secret=SECRETS["T_WEBHOOK_SECRET"].encode()).start(),
        "slack": await HttpReceiver("slack").start(),
        "pagerduty": await HttpReceiver("pagerduty").start(),
    }
    yield out
    for r in out.values():
        await r.stop()


@pytest.fixture
async def delivery_log(pg_dsn: str) -> AsyncIterator[DeliveryLog]:
    log = DeliveryLog(pg_dsn)
    await log.open()
    yield log
    await log.close()


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpReceiver]:
    server = SmtpReceiver(tmp_path).start()
    yield server
    server.stop()


def _channels(rx: dict[str, HttpReceiver], smtp: SmtpReceiver) -> tuple[object, ...]:
    assert smtp.ca_file is not None
    return (
        WebhookChannel(
            name="ops",
            url=rx["webhook"].url,
            signing_secret_env="T_WEBHOOK_SECRET",
            allow_private_network=True,
        ),
        SlackChannel(name="chat", url_env="T_SLACK_URL", allow_private_network=True),
        PagerDutyChannel(
            name="pager", url=rx["pagerduty"].url, routing_key_env="T_PD_KEY", allow_private_network=True
        ),
        EmailChannel(
            name="mail",
            host="127.0.0.1",
            port=smtp.port,
            starttls=True,
            tls_ca_file=str(smtp.ca_file),
            username="nexus",
            password_env="T_SMTP_PASSWORD",
            sender="nexus@example.com",
            to=("oncall@example.com", "sec@example.com"),
            allow_private_network=True,
        ),
    )


async def _logged(log: DeliveryLog, alerts: int, deliveries: int) -> None:
    """Until the delivery log holds this many alerts and deliveries (it is
    written from the stream, after the events are there)."""
    async with asyncio.timeout(30):
        while True:
            rows = await log.rows()
            if len(rows["alert"]) >= alerts and len(rows["alert_delivery"]) >= deliveries:
                return
            await asyncio.sleep(0.05)


async def _log_rows(dsn: str) -> dict[str, list[dict[str, object]]]:
    log = DeliveryLog(dsn)
    await log.open()
    try:
        return await log.rows()
    finally:
        await log.close()


async def test_each_channel_delivers_to_a_real_receiver_once_and_the_log_replays(
    js: JetStreamContext,
    topology: Topology,
    nats_url: str,
    pg_dsn: str,
    receivers: dict[str, HttpReceiver],
    smtp: SmtpReceiver,
    delivery_log: DeliveryLog,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    env = {**SECRETS, "T_SLACK_URL": receivers["slack"].url}
    cfg = AlertsConfig(
        channels=_channels(receivers, smtp),  # type: ignore[arg-type]
        rules=(AuditChainRule(name="chain-7", channels=("ops", "chat", "pager", "mail")),),
    )
    worker = AlertsWorker(nats_url, topology, cfg, env=env, log_writer=delivery_log.write)
    await worker.start()
    try:
        broken = AuditVerified(
            ok=False, first_n=1, last_n=40, checked=16, head_n=40, broken_n=17, reason="record altered"
        )
        await publish(js, topology, broken)
        http = list(receivers.values())
        await wait_for(lambda: all(r.got for r in http) and bool(smtp.messages))
        # The same break found again by the next scheduled verification: one
        # alert per window, not one per run.
        suppressed = metric("nexus_alerts_suppressed_total", rule="chain-7")
        for _ in range(3):
            await publish(
                js,
                topology,
                AuditVerified(ok=False, first_n=1, last_n=41, broken_n=17, reason="record altered"),
            )
        await wait_for(lambda: metric("nexus_alerts_suppressed_total", rule="chain-7") == suppressed + 3)
        await wait_for_events(js, topology, "alert.delivery", 4)
        await _logged(delivery_log, 1, 4)
        await asyncio.sleep(0.5)  # a duplicate delivery would be under way by now
    finally:
        await worker.stop()
    counts = {name: len(r.got) for name, r in receivers.items()} | {"smtp": len(smtp.messages)}
    print(f"\nmust-show 7: receivers got {counts} for 1 alert raised from 4 breaks reported (3 suppressed)")
    assert counts == {"webhook": 1, "slack": 1, "pagerduty": 1, "smtp": 1}
    for name, r in receivers.items():
        assert r.got[0].error == "", (name, r.got[0])
    [hook] = [r.doc for r in receivers["webhook"].got]
    alert_id = hook["id"]
    assert hook["severity"] == "critical" and hook["rule_kind"] == "audit_chain"
    assert hook["details"]["broken_n"] == "17" and "record altered" in hook["summary"]
    [slack] = [r.doc for r in receivers["slack"].got]
    assert "Audit chain broken at record 17" in slack["text"] and slack["blocks"][0]["type"] == "header"
    [pd] = [r.doc for r in receivers["pagerduty"].got]
    assert pd["event_action"] == "trigger" and pd["routing_key"] == SECRETS["T_PD_KEY"]
    assert pd["dedup_key"] == "nexus:chain-7:audit-chain" and pd["payload"]["severity"] == "critical"
    assert pd["payload"]["custom_details"]["alert_id"] == alert_id
    [mail] = smtp.messages
    assert mail["X-Nexus-Alert-Id"] == alert_id and "[CRITICAL]" in mail["Subject"]
    assert smtp.envelopes == [("nexus@example.com", ["oncall@example.com", "sec@example.com"], True)]
    assert "record 17" in mail.get_content() and smtp.auth_failures == 0
    # The delivery log: one alert, four deliveries, each delivered once.
    rows = await _log_rows(pg_dsn)
    assert [r["id"] for r in rows["alert"]] == [alert_id]
    assert sorted((r["channel"], r["outcome"], r["attempts"]) for r in rows["alert_delivery"]) == [
        ("chat", "delivered", 1),
        ("mail", "delivered", 1),
        ("ops", "delivered", 1),
        ("pager", "delivered", 1),
    ]
    # Replay drops the log and rebuilds it from the stream: the same rows.
    report = await replay(pg_dsn, nats_url, topology)
    assert report.events == 5
    assert await _log_rows(pg_dsn) == rows
    # No secret in anything logged.
    for secret in (*SECRETS.values(), receivers["slack"].url, smtp.password):
        if secret:
            assert secret not in caplog.text


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _crossing(counter: str) -> QuotaAlert:
    return QuotaAlert(
        budget_id="team",
        counter_id=counter,
        window_id="d2026-12-07",
        unit="tokens",
        action="soft",
        threshold=0.8,
        limit=1000.0,
        spent=801.0,
        tenant=Tenant(org_id="acme"),
    )


async def test_rate_limit_is_honoured_and_failed_deliveries_are_logged_with_their_reason(
    js: JetStreamContext,
    topology: Topology,
    nats_url: str,
    pg_dsn: str,
    receivers: dict[str, HttpReceiver],
    delivery_log: DeliveryLog,
    caplog: pytest.LogCaptureFixture,
) -> None:
    flaky = await HttpReceiver("webhook", secret=b"s3cret-signing-key", fail_with=503).start()
    refusing = await HttpReceiver("webhook", secret=b"s3cret-signing-key", fail_with=400).start()
    fast = {"backoff_initial_s": 0.05, "backoff_max_s": 0.2, "allow_private_network": True}
    secret = {"signing_secret_env": "T_WEBHOOK_SECRET"}
    cfg = AlertsConfig(
        channels=(
            WebhookChannel(name="ops", url=receivers["webhook"].url, rate_per_minute=2, **secret, **fast),  # type: ignore[arg-type]
            WebhookChannel(
                name="dead",
                url=f"http://127.0.0.1:{_closed_port()}/hook",
                max_attempts=3,
                **secret,
                **fast,  # type: ignore[arg-type]
            ),
            WebhookChannel(name="flaky", url=flaky.url, max_attempts=2, **secret, **fast),  # type: ignore[arg-type]
            WebhookChannel(name="refusing", url=refusing.url, max_attempts=5, **secret, **fast),  # type: ignore[arg-type]
        ),
        rules=(
            BudgetRule(name="budget-rl", channels=("ops",)),
            AuditChainRule(name="chain-fail", channels=("dead", "flaky", "refusing")),
        ),
    )
    worker = AlertsWorker(nats_url, topology, cfg, env=SECRETS, log_writer=delivery_log.write)
    await worker.start()
    try:
        # Five different counters crossing: five alerts for a channel allowed two a minute.
        for i in range(5):
            await publish(js, topology, _crossing(f"team|key=k{i}"))
        await publish(
            js, topology, AuditVerified(ok=False, broken_n=3, reason="missing (records 3-3 deleted)")
        )
        deliveries = await wait_for_events(js, topology, "alert.delivery", 8)
        await wait_for(lambda: len(flaky.got) == 2 and len(refusing.got) == 1)
        await _logged(delivery_log, 6, 8)
    finally:
        await worker.stop()
        await flaky.stop()
        await refusing.stop()
    outcomes = [(d.channel, d.outcome) for d in deliveries if isinstance(d, AlertDelivery)]
    ops = [o for c, o in outcomes if c == "ops"]
    print(
        f"\nmust-show 7: a channel allowed 2/min got {ops.count('delivered')} of 5 alerts, "
        f"{ops.count('rate_limited')} rate-limited"
    )
    assert sorted(ops) == ["delivered", "delivered", "rate_limited", "rate_limited", "rate_limited"]
    assert len(receivers["webhook"].accepted) == 2
    by_channel = {d.channel: d for d in deliveries if isinstance(d, AlertDelivery) and d.channel != "ops"}
    dead, flaky_d, refusing_d = by_channel["dead"], by_channel["flaky"], by_channel["refusing"]
    assert (dead.outcome, dead.attempts, dead.status_code) == ("failed", 3, 0)
    assert dead.reason == "cannot connect: ConnectionRefusedError"
    assert (flaky_d.outcome, flaky_d.attempts, flaky_d.status_code, flaky_d.reason) == (
        "failed",
        2,
        503,
        "HTTP 503",
    )
    # A 400 is the receiver's final word: not retried.
    assert (refusing_d.outcome, refusing_d.attempts, refusing_d.status_code) == ("failed", 1, 400)
    rows = await _log_rows(pg_dsn)
    failed = sorted(
        (r["channel"], r["attempts"], r["reason"]) for r in rows["alert_delivery"] if r["outcome"] == "failed"
    )
    assert failed == [
        ("dead", 3, "cannot connect: ConnectionRefusedError"),
        ("flaky", 2, "HTTP 503"),
        ("refusing", 1, "HTTP 400"),
    ]
    assert sum(1 for r in rows["alert_delivery"] if r["outcome"] == "rate_limited") == 3
    assert "delivery of" in caplog.text and "to dead failed after 3 attempt(s)" in caplog.text
    raised = [a for a in await events_of(js, topology, "alert.raised") if isinstance(a, AlertRaised)]
    assert len(raised) == 6


async def test_a_name_that_resolves_to_a_private_address_is_refused_at_connect_time(
    js: JetStreamContext, topology: Topology, nats_url: str, receivers: dict[str, HttpReceiver]
) -> None:
    # This machine's own name: the config check passes it (a name), DNS
    # says loopback, so the connect-time guard must refuse it.
    host = socket.gethostname()
    try:
        addresses = {i[4][0] for i in socket.getaddrinfo(host, None)}
    except OSError:
        pytest.skip(f"{host} does not resolve here")
    if not any(a.startswith(("127.", "10.", "192.168.", "::1")) for a in addresses):
        pytest.skip(f"{host} resolves to a public address here")
    port = receivers["webhook"].url.rsplit(":", 1)[1]
    cfg = AlertsConfig(
        channels=(
            WebhookChannel(name="ops", url=f"http://{host}:{port}", signing_secret_env="T_WEBHOOK_SECRET"),
        ),
        rules=(AuditChainRule(name="chain-ssrf", channels=("ops",)),),
    )
    worker = AlertsWorker(nats_url, topology, cfg, env=SECRETS)
    await worker.start()
    try:
        await publish(js, topology, AuditVerified(ok=False, broken_n=9, reason="record altered"))
        [d] = await wait_for_events(js, topology, "alert.delivery", 1)
    finally:
        await worker.stop()
    assert isinstance(d, AlertDelivery) and d.outcome == "failed" and d.attempts == 1
    assert "non-public address" in d.reason and "allow_private_network" in d.reason
    assert receivers["webhook"].got == []


async def test_a_dead_receiver_retrying_does_not_hold_up_the_alerts_behind_it(
    js: JetStreamContext, topology: Topology, nats_url: str, receivers: dict[str, HttpReceiver]
) -> None:
    slow = {"backoff_initial_s": 4.0, "backoff_max_s": 4.0, "allow_private_network": True}
    cfg = AlertsConfig(
        channels=(
            WebhookChannel(
                name="ops",
                url=receivers["webhook"].url,
                signing_secret_env="T_WEBHOOK_SECRET",
                allow_private_network=True,
            ),
            WebhookChannel(
                name="dead",
                url=f"http://127.0.0.1:{_closed_port()}/hook",
                signing_secret_env="T_WEBHOOK_SECRET",
                max_attempts=2,
                **slow,
            ),  # type: ignore[arg-type]
        ),
        rules=(
            AuditChainRule(name="chain-hol", channels=("ops", "dead")),
            BudgetRule(name="budget-hol", channels=("ops",)),
        ),
    )
    worker = AlertsWorker(nats_url, topology, cfg, env=SECRETS)
    await worker.start()
    try:
        await publish(js, topology, AuditVerified(ok=False, broken_n=4, reason="record altered"))
        await wait_for(lambda: len(receivers["webhook"].got) == 1)  # the first alert is being delivered
        await publish(js, topology, _crossing("team|key=behind"))
        deliveries = await wait_for_events(js, topology, "alert.delivery", 3)
    finally:
        await worker.stop()
    order = [(d.rule, d.channel, d.outcome) for d in deliveries if isinstance(d, AlertDelivery)]
    # The budget alert raised after the audit alert was delivered while the
    # dead receiver's second attempt still waited its 4 s backoff.
    assert order.index(("budget-hol", "ops", "delivered")) < order.index(("chain-hol", "dead", "failed")), (
        order
    )
