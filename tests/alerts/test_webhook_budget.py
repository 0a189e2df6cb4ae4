"""The worker on real NATS: a budget crossing published on the traffic
stream reaches a real webhook receiver, signed, once; the delivery is an
event on the stream."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from processors.alerts.worker import AlertsWorker
from streams.config_alerts import AlertsConfig, BlockRateRule, BudgetRule, WebhookChannel
from streams.events import Tenant
from streams.events_alerts import AlertDelivery, AlertRaised
from streams.events_compliance import StageDecision
from streams.events_quota import QuotaAlert
from streams.topology import Topology
from tests.alerts.receivers import HttpReceiver
from tests.alerts.support import events_of, publish, wait_for

pytestmark = pytest.mark.integration

ENV = {"ALERTS_TEST_SECRET": "s3cret-signing-key"}


def config(url: str) -> AlertsConfig:
    return AlertsConfig(
        channels=(
            WebhookChannel(
                name="ops", url=url, signing_secret_env="ALERTS_TEST_SECRET", allow_private_network=True
            ),
        ),
        rules=(BudgetRule(name="budgets", thresholds=(0.8, 1.0), channels=("ops",)),),
    )


def crossing(threshold: float, *, counter: str = "team|key=k1") -> QuotaAlert:
    return QuotaAlert(
        alert_key=f"{counter}:{threshold}",
        budget_id="team",
        counter_id=counter,
        window_id="m2026-12",
        unit="usd",
        action="hard",
        threshold=threshold,
        limit=100.0,
        spent=100.0 * threshold + 0.5,
        tenant=Tenant(org_id="acme"),
    )


async def test_a_budget_crossing_reaches_the_webhook_signed_and_once(
    js: JetStreamContext, topology: Topology, nats_url: str, webhook: HttpReceiver
) -> None:
    worker = AlertsWorker(nats_url, topology, config(webhook.url), env=ENV)
    await worker.start()
    try:
        first = crossing(0.8)
        await publish(js, topology, first)
        await publish(js, topology, crossing(0.5))  # not a threshold the rule watches
        await wait_for(lambda: len(webhook.got) >= 1)
        # The same crossing again (a second quota processor, a re-drive): suppressed.
        again = crossing(0.8)
        await publish(js, topology, again)
        await publish(js, topology, crossing(1.0))
        await wait_for(lambda: len(webhook.got) >= 2)
        await asyncio.sleep(1.0)  # time for a duplicate to show up, were one sent
    finally:
        await worker.stop()
    assert [r.error for r in webhook.got] == ["", ""], webhook.got
    docs = [r.doc for r in webhook.got]
    assert [d["severity"] for d in docs] == ["warning", "critical"]
    assert docs[0]["rule"] == "budgets" and docs[0]["subject"] == "team|key=k1@m2026-12"
    assert docs[0]["source_event_id"] == first.id and docs[1]["suppressed"] == 0
    assert "80 %" in docs[0]["title"] and "$80.50 of $100.00" in docs[0]["summary"]
    raised = await events_of(js, topology, "alert.raised")
    assert {a.tenant.org_id for a in raised} == {"acme"}  # the budget's tenant: SIEM org filters see it
    deliveries = await events_of(js, topology, "alert.delivery")
    assert [a.id for a in raised if isinstance(a, AlertRaised)] == [d["id"] for d in docs]
    assert [
        (d.channel, d.outcome, d.attempts, d.status_code) for d in deliveries if isinstance(d, AlertDelivery)
    ] == [
        ("ops", "delivered", 1, 200),
        ("ops", "delivered", 1, 200),
    ]


async def test_a_handler_that_fails_gets_its_event_again_later_and_nothing_is_sent_twice(
    js: JetStreamContext,
    topology: Topology,
    nats_url: str,
    webhook: HttpReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    written: list[str] = []
    failures = [1]

    async def writer(event: AlertRaised | AlertDelivery) -> None:
        if failures and isinstance(event, AlertDelivery):
            failures.pop()
            raise ConnectionError("postgres is away")
        written.append(type(event).__name__)

    worker = AlertsWorker(nats_url, topology, config(webhook.url), env=ENV, log_writer=writer)
    await worker.start()
    try:
        await publish(js, topology, crossing(1.0))
        await wait_for(lambda: len(written) == 2)
        await asyncio.sleep(0.5)
    finally:
        await worker.stop()
    assert len(webhook.got) == 1 and failures == []
    assert "the delivery log failed (ConnectionError); the event comes back in 2 s" in caplog.text


async def test_a_source_is_read_only_while_a_rule_needs_it(
    js: JetStreamContext, topology: Topology, nats_url: str, webhook: HttpReceiver
) -> None:
    async def consumers() -> set[str]:
        names = set()
        for kind in ("budget", "stage", "audit"):
            try:
                await js.consumer_info(topology.traffic_stream, f"{topology.prefix}_alerts_{kind}")
                names.add(kind)
            except NotFoundError:
                pass
        return names

    budget_only = config(webhook.url)
    worker = AlertsWorker(nats_url, topology, budget_only, env=ENV)
    await worker.start()
    try:
        assert await consumers() == {"budget"}  # no block-rate rule: hook.stage is not read
        blocks = BlockRateRule(name="blocks", min_count=1, per="global", channels=("ops",))
        assert await worker.set_config(
            msgspec.structs.replace(budget_only, rules=(*budget_only.rules, blocks))
        )
        assert await consumers() == {"budget", "stage"}
        await publish(js, topology, StageDecision(decision="block"))
        await wait_for(lambda: len(webhook.got) == 1)
        assert await worker.set_config(budget_only)
        assert await consumers() == {"budget"}
    finally:
        await worker.stop()
    assert webhook.got[0].doc["rule"] == "blocks"
