"""A budget alert from real traffic: the official SDK through the gateway,
usage settled by the quota processor, its quota.alert turned by the alerts
worker into a signed webhook a real receiver accepts, once."""

from __future__ import annotations

import asyncio

import pytest

from processors.alerts.worker import AlertsWorker
from streams.config_alerts import AlertsConfig, BudgetRule, WebhookChannel
from tests.alerts.receivers import HttpReceiver
from tests.quota_e2e.conftest import SOFT_USD, QuotaStack
from tests.quota_e2e.helpers import cost, sdk, settled

pytestmark = pytest.mark.integration


async def test_a_soft_budget_crossed_by_real_traffic_reaches_the_webhook_once(
    qstack: QuotaStack, nats_url: str
) -> None:
    receiver = await HttpReceiver("webhook", secret=b"e2e-webhook-secret").start()
    cfg = AlertsConfig(
        channels=(
            WebhookChannel(
                name="ops", url=receiver.url, signing_secret_env="E2E_SECRET", allow_private_network=True
            ),
        ),
        rules=(BudgetRule(name="budgets", channels=("ops",)),),
    )
    worker = AlertsWorker(nats_url, qstack.topology, cfg, env={"E2E_SECRET": "e2e-webhook-secret"})
    await worker.start()
    spent = 0.0
    try:
        async with sdk(qstack, "k-soft") as c:
            for i in range(40):
                done = await c.chat.completions.create(
                    model="gpt-q", messages=[{"role": "user", "content": f"alert {i}"}], max_tokens=10
                )
                assert done.usage is not None
                spent += cost(done.usage.prompt_tokens, done.usage.completion_tokens)
                await settled(qstack)
                if spent > 1.5 * SOFT_USD:
                    break
        async with asyncio.timeout(20):
            while not receiver.got:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # a second notification would be on its way by now
    finally:
        await worker.stop()
        await receiver.stop()
    print(f"\nsoft budget ${SOFT_USD}: ${spent:.4f} spent by real requests, {len(receiver.got)} webhook(s)")
    [got] = receiver.got
    assert got.error == ""
    doc = got.doc
    assert doc["rule_kind"] == "budget" and doc["details"]["budget"] == "soft"
    assert doc["details"]["threshold"] == "0.5" and doc["severity"] == "warning"
    assert float(doc["details"]["spent"]) >= 0.5 * SOFT_USD and doc["details"]["unit"] == "usd"
