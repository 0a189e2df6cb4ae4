"""Quotas through the real gateway, as a caller sees them: the official SDKs,
the simulated provider, JetStream, the QuotaProcessor and Valkey."""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from typing import Any

import anthropic
import httpx
import msgspec
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ingress.gateway import create_app, start_gateway
from nexus.sim import SimSettings
from streams.events import UsageRecorded
from streams.events_quota import QuotaAlert
from tests.quota_e2e.conftest import ADMIN_TOKEN, CAP_USD, KEY_IDS, PRICE, SIM_KEY, SOFT_USD, QuotaStack
from tests.quota_e2e.helpers import Burst, Collector, burst_of, cost, limit, sdk, settled, usage_of

pytestmark = pytest.mark.integration

MAX_TOKENS = 40


@pytest.mark.slow  # ~20-40 s: 500 SDK calls, gateway and simulator share one event loop
async def test_concurrent_burst_never_spends_past_a_hard_usd_cap(qstack: QuotaStack) -> None:
    """500 concurrent requests (half streamed) against a $1 cap, then waves
    that use the headroom settlement frees, until nothing more fits."""
    async with sdk(qstack, "k-cap") as c:
        burst = await burst_of(c, 500, model="gpt-q", max_tokens=MAX_TOKENS)
        first = (burst.admitted, burst.rejected, burst.spend_usd)
        waves = 0
        while waves < 15:
            await settled(qstack)
            before = burst.admitted
            await burst_of(c, 50, model="gpt-q", max_tokens=MAX_TOKENS, start=10_000 + 50 * waves, into=burst)
            waves += 1
            if burst.admitted == before:
                break
    await settled(qstack)
    usage = await usage_of(qstack, "k-cap")
    cap = limit(usage, "cap")
    one_request = cost(burst.max_prompt + 16, MAX_TOKENS)  # one request's max_tokens, worst case
    print(
        f"\nhard cap ${CAP_USD:.2f}: burst of 500 -> {first[0]} admitted / {first[1]} rejected "
        f"(${first[2]:.6f}); after {waves} waves of 50: {burst.admitted} admitted, {burst.rejected} "
        f"rejected, admitted spend ${burst.spend_usd:.6f}, settled ${cap['spent']:.6f}, "
        f"cap + one request ${CAP_USD + one_request:.6f}"
    )
    assert first[0] > 0 and first[1] > 0, "the burst must both fit and overflow the cap"
    assert burst.spend_usd <= CAP_USD + one_request
    assert cap["spent"] == pytest.approx(burst.spend_usd, abs=1e-6)  # counters = the usage events
    assert cap["reserved"] == 0
    assert cap["remaining"] == pytest.approx(max(0.0, CAP_USD - cap["spent"]), abs=1e-6)
    # Nothing more fits: the last wave was refused, so the cap is within one
    # request's worst case of full.
    assert CAP_USD - cap["spent"] < one_request + cost(burst.max_prompt + 16, 0)
    assert burst.reject_codes == {"QUOTA_EXCEEDED"}
    h = burst.reject_headers[0]
    assert int(h["retry-after"]) >= 1
    assert h["x-nexus-quota-limit"].endswith("usd (cap)")
    assert "x-nexus-quota-remaining" in h
    ok = burst.ok_headers[0]
    assert float(ok["x-nexus-quota-remaining"]) <= CAP_USD


async def test_token_cap_on_a_model_axis_holds_under_concurrency(qstack: QuotaStack) -> None:
    async with sdk(qstack, "k-tok") as c:
        burst = await burst_of(c, 120, model="gpt-q", max_tokens=MAX_TOKENS)
    await settled(qstack)
    tok = limit(await usage_of(qstack, "k-tok"), "tok")
    print(
        f"\ntoken cap 3000 on gpt-q: {burst.admitted} admitted / {burst.rejected} rejected, "
        f"{burst.tokens} tokens admitted, settled {tok['spent']:.0f}"
    )
    assert burst.admitted > 0 and burst.rejected > 0
    assert burst.tokens <= 3000 + burst.max_prompt + MAX_TOKENS
    assert tok["spent"] == burst.tokens and tok["model"] == "gpt-q"
    # The budget is on gpt-q only: another model is not limited by it.
    async with sdk(qstack, "k-tok") as c:
        ok = await c.chat.completions.create(
            model="gpt-q-big", messages=[{"role": "user", "content": "hi"}], max_tokens=5
        )
    assert ok.choices[0].message.content


async def test_soft_threshold_warns_and_alerts_exactly_once(qstack: QuotaStack, nats_url: str) -> None:
    alerts = Collector()
    await alerts.start(nats_url, qstack.topology.traffic_subject("quota.alert"))
    warned: list[str] = []
    try:
        async with sdk(qstack, "k-soft") as c:
            spent = 0.0
            for i in range(40):  # past the soft limit: soft never refuses
                raw = await c.chat.completions.with_raw_response.create(
                    model="gpt-q", messages=[{"role": "user", "content": f"soft {i}"}], max_tokens=10
                )
                warned.append(raw.headers.get("x-nexus-quota-warning", ""))
                u = raw.parse().usage
                assert u is not None
                spent += cost(u.prompt_tokens, u.completion_tokens)
                await settled(qstack)
                if spent > 1.5 * SOFT_USD:
                    break
        await asyncio.sleep(0.3)
    finally:
        await alerts.close()
    mine = [a for a in alerts.events if isinstance(a, QuotaAlert) and a.budget_id == "soft"]
    print(f"\nsoft ${SOFT_USD}: spent ${spent:.6f} over {len(warned)} requests, alerts {len(mine)}")
    assert spent > SOFT_USD
    assert len(mine) == 1 and mine[0].threshold == 0.5 and mine[0].action == "soft"
    assert mine[0].spent >= 0.5 * SOFT_USD
    assert not warned[0]
    assert warned[-1].startswith("soft=")


async def test_rate_limit_answers_in_the_callers_format(qstack: QuotaStack) -> None:
    """3 requests a minute: the 4th gets a 429, in Anthropic's shape on
    /v1/messages and OpenAI's on /v1/chat/completions."""
    key = qstack.keys["k-rpm"]
    ac = anthropic.AsyncAnthropic(base_url=qstack.url.removesuffix("/v1"), api_key=key, max_retries=0)
    for i in range(3):
        raw = await ac.messages.with_raw_response.create(
            model="gpt-q", max_tokens=10, messages=[{"role": "user", "content": f"hi {i}"}]
        )
        assert raw.headers["x-ratelimit-limit-requests"] == "3"
        assert raw.headers["x-ratelimit-remaining-requests"] == str(2 - i)
        assert (await raw.parse()).content
    with pytest.raises(anthropic.RateLimitError) as refused:
        await ac.messages.create(model="gpt-q", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    body = refused.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "rate_limit_error" and "rpm" in body["error"]["message"]
    h = refused.value.response.headers
    assert h["x-ratelimit-remaining-requests"] == "0" and 1 <= int(h["retry-after"]) <= 60
    async with sdk(qstack, "k-rpm") as c:
        with pytest.raises(openai.RateLimitError) as oai:
            await c.chat.completions.create(model="gpt-q", messages=[{"role": "user", "content": "x"}])
    assert isinstance(oai.value.body, dict) and oai.value.body["code"] == "RATE_LIMITED"
    await ac.close()


async def test_stream_is_cut_at_its_reservation(qstack: QuotaStack) -> None:
    """The simulator ignores max_tokens for JSON output: the gateway meters
    the stream and ends it with an error frame once the reservation is used."""
    schema = {
        "type": "object",
        "properties": {f"field_{i}": {"type": "string"} for i in range(40)},
        "required": [f"field_{i}" for i in range(40)],
    }
    async with sdk(qstack, "k-cap") as c:
        # A provider that honours the max_tokens it was sent is not cut, even
        # when it uses all of them.
        honest = await c.chat.completions.create(
            model="gpt-q",
            messages=[{"role": "user", "content": "tell me a long story about budgets and quotas"}],
            max_tokens=5,
            stream=True,
        )
        finish = [ch.choices[0].finish_reason async for ch in honest if ch.choices]
        assert finish[-1] == "length"
        kw: dict[str, Any] = {
            "model": "gpt-q",
            "messages": [{"role": "user", "content": "json please"}],
            "max_tokens": 8,
            "response_format": {"type": "json_schema", "json_schema": {"name": "big", "schema": schema}},
        }
        stream = await c.chat.completions.create(**kw, stream=True)
        text = ""
        with pytest.raises(openai.APIError) as cut:
            async for chunk in stream:
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
    assert "budget reservation" in str(cut.value)
    assert len(text) < 200  # the 40-field document never arrived whole
    await settled(qstack)
    cap = limit(await usage_of(qstack, "k-cap"), "cap")
    assert cap["reserved"] == 0 and cap["spent"] > 0  # settled by its usage event


async def test_failed_request_releases_its_reservation_at_once(qstack: QuotaStack) -> None:
    async with httpx.AsyncClient(timeout=10) as h:
        r = await h.post(
            qstack.url + "/chat/completions",
            headers={"Authorization": f"Bearer {qstack.keys['k-cap']}"},
            json={"model": "flaky", "messages": [{"role": "user", "content": "x"}], "max_tokens": 50},
        )
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_error"
    assert "x-nexus-quota-remaining" in r.headers  # quota headers on the error too
    cap = limit(await usage_of(qstack, "k-cap"), "cap")  # no wait: released before the answer
    assert cap["reserved"] == 0 and cap["spent"] == 0


async def test_a_caller_who_hangs_up_frees_its_reservation_and_pays_what_the_provider_had(
    qstack: QuotaStack, nats_url: str
) -> None:
    usage = Collector()
    await usage.start(nats_url, qstack.topology.traffic_subject("usage.recorded"))
    qstack.sim.state.settings = SimSettings(latency_ms=5000, api_key=SIM_KEY)
    body = {
        "model": "gpt-q",
        "messages": [{"role": "user", "content": "a long wait " * 20}],
        "max_tokens": 50,
    }
    try:
        async with httpx.AsyncClient(timeout=10) as h:
            call = asyncio.create_task(
                h.post(
                    qstack.url + "/chat/completions",
                    headers={"Authorization": f"Bearer {qstack.keys['k-cap']}"},
                    json=body,
                )
            )
            await asyncio.sleep(0.5)
            reserved = limit(await usage_of(qstack, "k-cap"), "cap")["reserved"]
            assert reserved > 0  # held while the provider works
            call.cancel()  # the caller hangs up
            with pytest.raises(asyncio.CancelledError):
                await call
        async with asyncio.timeout(3):  # not the provider's 5 s
            while limit(await usage_of(qstack, "k-cap"), "cap")["reserved"] != 0:
                await asyncio.sleep(0.05)
        await settled(qstack)
        cap = limit(await usage_of(qstack, "k-cap"), "cap")
        recorded = [e for e in usage.events if isinstance(e, UsageRecorded)]
        assert len(recorded) == 1 and recorded[0].estimated and recorded[0].usage.completion_tokens == 0
        assert recorded[0].cost_usd > 0
        assert cap["reserved"] == 0 and cap["spent"] == pytest.approx(recorded[0].cost_usd, abs=1e-9)
    finally:
        await usage.close()
        qstack.sim.state.settings = SimSettings(api_key=SIM_KEY)


async def test_unpriced_model_under_a_usd_budget_is_refused(qstack: QuotaStack) -> None:
    async with sdk(qstack, "k-cap") as c:
        with pytest.raises(openai.PermissionDeniedError) as refused:
            await c.chat.completions.create(model="unpriced", messages=[{"role": "user", "content": "x"}])
    assert isinstance(refused.value.body, dict) and refused.value.body["code"] == "QUOTA_MODEL_UNPRICED"
    # No budget applies to k-free: the unpriced model is served.
    async with sdk(qstack, "k-free") as c:
        ok = await c.chat.completions.create(model="unpriced", messages=[{"role": "user", "content": "x"}])
    assert ok.choices[0].message.content


async def test_downgrade_forwards_to_the_cheaper_model_and_records_it(
    qstack: QuotaStack, nats_url: str
) -> None:
    usage = Collector()
    await usage.start(nats_url, qstack.topology.traffic_subject("usage.recorded"))
    try:
        async with sdk(qstack, "k-down") as c:
            raw = await c.chat.completions.with_raw_response.create(
                model="gpt-q-big", messages=[{"role": "user", "content": "hello"}], max_tokens=100
            )
        assert raw.parse().choices[0].message.content
        await settled(qstack)
        await asyncio.sleep(0.2)
    finally:
        await usage.close()
    # 100 output tokens at $400/M is $0.04: over the $0.02 budget, so the
    # request went to gpt-cheap instead.
    assert raw.headers["x-nexus-quota-downgrade"] == "gpt-cheap"
    assert raw.headers["x-nexus-quota-original-model"] == "gpt-q-big"
    assert raw.headers["x-nexus-routed-model"] == "sim-small"
    rid = raw.headers["x-nexus-request-id"]
    recorded = [e for e in usage.events if isinstance(e, UsageRecorded) and e.request_id == rid]
    assert len(recorded) == 1 and recorded[0].model == "gpt-cheap"
    u = recorded[0].usage
    assert recorded[0].cost_usd == pytest.approx((u.prompt_tokens * 0.1 + u.completion_tokens * 0.4) / 1e6)


async def test_every_ingress_format_reserves_and_usage_endpoint_reports(qstack: QuotaStack) -> None:
    auth = {"Authorization": f"Bearer {qstack.keys['k-cap']}"}
    async with httpx.AsyncClient(timeout=10) as h:
        emb = await h.post(qstack.url + "/embeddings", headers=auth, json={"model": "embed-q", "input": "hi"})
        resp = await h.post(
            qstack.url + "/responses",
            headers=auth,
            json={"model": "gpt-q", "input": "hi", "max_output_tokens": 20},
        )
        msg = await h.post(
            qstack.url + "/messages",
            headers={"x-api-key": qstack.keys["k-cap"], "anthropic-version": "2023-06-01"},
            json={"model": "gpt-q", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]},
        )
        stream = await h.post(
            qstack.url + "/chat/completions",
            headers=auth,
            json={
                "model": "gpt-q",
                "stream": True,
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "x"}],
            },
        )
        anon = await h.get(qstack.url + "/usage")
        free = await h.get(
            qstack.url + "/usage", headers={"Authorization": f"Bearer {qstack.keys['k-free']}"}
        )
    for r in (emb, resp, msg, stream):
        assert r.status_code == 200, r.text
        assert r.headers["x-nexus-quota-limit"].endswith("usd (cap)"), r.url
    await settled(qstack)
    usage = await usage_of(qstack, "k-cap")
    cap = limit(usage, "cap")
    assert usage["key_id"] == "k-cap" and usage["org"] == "acme"
    assert cap["spent"] > 0 and cap["reserved"] == 0 and cap["unit"] == "usd" and cap["action"] == "hard"
    assert cap["remaining"] == pytest.approx(CAP_USD - cap["spent"], abs=1e-9)
    assert cap["limit"] == CAP_USD and cap["window"] == "day"
    assert anon.status_code == 401 and anon.json()["error"]["code"] == "missing_api_key"
    assert free.status_code == 200 and free.json()["limits"] == []


async def test_tenant_metrics_show_spend_and_remaining_per_budget_to_the_admin_only(
    qstack: QuotaStack,
) -> None:
    async with sdk(qstack, "k-cap") as c:
        await c.chat.completions.create(
            model="gpt-q", messages=[{"role": "user", "content": "x"}], max_tokens=5
        )
    await settled(qstack)
    spent = limit(await usage_of(qstack, "k-cap"), "cap")["spent"]
    url = qstack.url.removesuffix("/v1") + "/metrics/tenants"
    async with httpx.AsyncClient() as h:
        anonymous = await h.get(url)
        a_tenant = await h.get(url, headers={"Authorization": f"Bearer {qstack.keys['k-cap']}"})
        wrong = await h.get(url, headers={"Authorization": "Bearer not-the-admin-token"})
        text = (await h.get(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})).text
    for refused in (anonymous, a_tenant, wrong):
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_admin_token"
        assert "nexus_quota" not in refused.text
    lines = {
        ln.split(" ")[0]: float(ln.split(" ")[1]) for ln in text.splitlines() if ln.startswith("nexus_quota_")
    }
    labels = '{budget="cap",counter="cap",unit="usd"}'
    assert lines["nexus_quota_spent" + labels] == pytest.approx(spent)
    assert lines["nexus_quota_remaining" + labels] == pytest.approx(CAP_USD - spent)
    assert lines["nexus_quota_limit" + labels] == CAP_USD
    assert lines['nexus_quota_limit{budget="rpm.rpm",counter="rpm.rpm|key=k-rpm",unit="requests"}'] == 3


async def test_public_metrics_carry_no_tenant_identifier(qstack: QuotaStack) -> None:
    """Every metric family /metrics shows without credentials, after traffic
    from every key (admitted, refused, downgraded, rate limited), /v1/usage
    reads and an admin scrape: no label names a tenant dimension, and no
    label value is (or has as a part) an org, project, key, user or budget id."""
    for kid in KEY_IDS:
        async with sdk(qstack, kid) as c:
            for model in ("gpt-q", "gpt-q-big", "unpriced"):
                with contextlib.suppress(openai.APIError):
                    await c.chat.completions.create(
                        model=model, messages=[{"role": "user", "content": "x"}], max_tokens=5
                    )
        await usage_of(qstack, kid)
    root = qstack.url.removesuffix("/v1")
    async with httpx.AsyncClient() as h:
        await h.get(root + "/metrics/tenants", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        text = (await h.get(root + "/metrics")).text
    cfg = qstack.snapshot.config
    tenant_ids = (
        {o.id for o in cfg.orgs}
        | {p.id for p in cfg.projects}
        | {k.id for k in cfg.virtual_keys}
        | {k.user for k in cfg.virtual_keys if k.user}
        | {b.id for b in cfg.quotas.budgets}
        | {r.id for r in cfg.quotas.rate_limits}
    )
    tenant_labels = {"org", "project", "key", "key_id", "user", "tenant", "budget", "counter", "limit"}
    families = list(text_string_to_metric_families(text))
    assert len(families) > 10  # the gateway's, the publisher's, the quota decisions...
    assert "nexus_quota_decisions" in {f.name for f in families}
    for family in families:
        for sample in family.samples:
            assert not tenant_labels & set(sample.labels), (family.name, sample.labels)
            for value in sample.labels.values():
                # "rpm.rpm|key=k-rpm" names the key k-rpm; "downgrade" names no budget "down".
                assert not tenant_ids & {value, *re.split(r"[^\w-]+", value)}, (family.name, sample.labels)
    assert "nexus_quota_spent" not in text and "k-cap" not in text and "acme" not in text


async def test_valkey_down_fails_closed_only_where_a_limit_applies(
    qstack: QuotaStack, tmp_path: object
) -> None:
    import valkey.asyncio as avalkey

    dead = avalkey.Valkey.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    app = create_app(
        qstack.snapshot,
        qstack.publisher,
        env={"SIM_QUOTA_KEY": SIM_KEY},
        valkey=dead,
        valkey_prefix=qstack.prefix,
    )
    gw = await start_gateway(app)
    try:
        async with httpx.AsyncClient(timeout=10) as h:
            body = {"model": "gpt-q", "messages": [{"role": "user", "content": "x"}]}
            capped = await h.post(
                gw.url + "/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {qstack.keys['k-cap']}"},
            )
            free = await h.post(
                gw.url + "/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {qstack.keys['k-free']}"},
            )
    finally:
        await gw.close()
        await dead.aclose()
    assert capped.status_code == 503 and capped.json()["error"]["code"] == "quota_store_unavailable"
    assert free.status_code == 200


@pytest.mark.parametrize(
    ("path", "field", "extra"),
    [
        ("/chat/completions", "max_tokens", {"messages": [{"role": "user", "content": "x"}]}),
        ("/messages", "max_tokens", {"messages": [{"role": "user", "content": "x"}]}),
        ("/responses", "max_output_tokens", {"input": "x"}),
    ],
)
async def test_absurd_output_limit_is_the_callers_400_not_the_quota_stores_503(
    qstack: QuotaStack, path: str, field: str, extra: dict[str, Any]
) -> None:
    """max_tokens = 2**63 under a soft budget reached Valkey and was answered
    503 "quota store unreachable"; 10**30 under a hard one, a 429."""
    async with httpx.AsyncClient(timeout=10) as h:
        for key, value in (("k-soft", 2**63), ("k-cap", 10**30)):
            r = await h.post(
                qstack.url + path,
                json={"model": "gpt-q", field: value, **extra},
                headers={"Authorization": f"Bearer {qstack.keys[key]}"},
            )
            assert r.status_code == 400, r.text
            assert field in r.text
    usage = await usage_of(qstack, "k-soft")
    assert limit(usage, "soft")["reserved"] == 0


def test_price_in_tests_matches_config() -> None:
    # The figures printed above use this price; a drift would make them lie.
    assert cost(1_000_000, 0) == PRICE["input"] and math.isclose(cost(0, 1_000_000), PRICE["output"])


__all__ = ["Burst"]


async def test_translated_stream_is_cut_in_anthropic_format(qstack: QuotaStack) -> None:
    """/v1/messages to an OpenAI-format provider (the codec path): a tool
    call's arguments ignore max_tokens at the simulator; the stream ends
    with an Anthropic error event once the reservation is used."""
    tool = {
        "name": "record",
        "description": "record many fields",
        "input_schema": {
            "type": "object",
            "properties": {f"field_{i}": {"type": "string"} for i in range(40)},
            "required": [f"field_{i}" for i in range(40)],
        },
    }
    ac = anthropic.AsyncAnthropic(
        base_url=qstack.url.removesuffix("/v1"), api_key=qstack.keys["k-cap"], max_retries=0
    )
    kw: dict[str, Any] = {
        "model": "gpt-q",
        "max_tokens": 8,
        "tools": [tool],
        "messages": [{"role": "user", "content": "record it"}],
    }
    seen = 0
    with pytest.raises(anthropic.APIStatusError) as cut:
        async with ac.messages.stream(**kw) as stream:
            async for _event in stream:
                seen += 1
    await ac.close()
    assert "budget reservation" in str(cut.value)
    await settled(qstack)
    cap = limit(await usage_of(qstack, "k-cap"), "cap")
    assert cap["reserved"] == 0 and cap["spent"] > 0


async def test_gateway_opens_its_own_valkey_from_the_environment(qstack: QuotaStack, valkey_url: str) -> None:
    """`nexus gateway` passes no client: the app opens one from
    NEXUS_VALKEY_URL and reserves under NEXUS_VALKEY_PREFIX."""
    env = {"SIM_QUOTA_KEY": SIM_KEY, "NEXUS_VALKEY_URL": valkey_url, "NEXUS_VALKEY_PREFIX": qstack.prefix}
    gw = await start_gateway(create_app(qstack.snapshot, qstack.publisher, env=env))
    try:
        async with httpx.AsyncClient(timeout=10) as h:
            r = await h.post(
                gw.url + "/chat/completions",
                headers={"Authorization": f"Bearer {qstack.keys['k-rpm']}"},
                json={"model": "gpt-q", "messages": [{"role": "user", "content": "x"}]},
            )
    finally:
        await gw.close()
    assert r.status_code == 200 and r.headers["x-ratelimit-remaining-requests"] == "2"
    # The same counters as the fixture's gateway: one request is spent there.
    async with sdk(qstack, "k-rpm") as c:
        raw = await c.chat.completions.with_raw_response.create(
            model="gpt-q", messages=[{"role": "user", "content": "x"}]
        )
    assert raw.headers["x-ratelimit-remaining-requests"] == "1"


async def test_answer_blocked_by_a_response_hook_still_counts(qstack: QuotaStack) -> None:
    """The provider billed the answer a compliance hook withheld: its usage
    settles the reservation, so provoking blocks cannot spend unmetered."""
    from nexus.sim.text import completion_words
    from streams.config_validation import parse_config
    from tests.inprocess import in_process_snapshot
    from tests.quota_e2e.conftest import SECRET, config_dict

    prompt = next(
        p
        for p in (f"tell me about the gateway, take {i}" for i in range(5000))
        if "secret" in completion_words("sim-small", p)
    )
    cfg = config_dict(qstack.sim.port, qstack.keys)
    cfg["hooks"] = {
        "pipeline": [
            {
                "id": "no-secrets-out",
                "type": "keyword-filter",
                "stage": "response",
                "settings": {"patterns": [r"\bsecret\b"], "rule": "leaked-word", "action": "block"},
            }
        ]
    }
    snapshot = in_process_snapshot(parse_config(msgspec.yaml.encode(cfg)), SECRET)
    app = create_app(
        snapshot,
        qstack.publisher,
        env={"SIM_QUOTA_KEY": SIM_KEY},
        valkey=qstack.valkey,
        valkey_prefix=qstack.prefix,
    )
    gw = await start_gateway(app)
    try:
        async with httpx.AsyncClient(timeout=30) as h:
            r = await h.post(
                gw.url + "/chat/completions",
                headers={"Authorization": f"Bearer {qstack.keys['k-cap']}"},
                json={"model": "gpt-q", "messages": [{"role": "user", "content": prompt}], "max_tokens": 200},
            )
    finally:
        await gw.close()
    assert r.status_code == 403, r.text
    await settled(qstack)
    cap = limit(await usage_of(qstack, "k-cap"), "cap")
    assert cap["spent"] > 0 and cap["reserved"] == 0


async def test_failover_reserves_again_for_the_target_it_moves_to(qstack: QuotaStack, nats_url: str) -> None:
    """The first target fails (503) before answering; the fallback is ten
    times dearer.  The reservation is made again at the fallback's price:
    within the cap it is served and charged at that price, past it the
    caller gets the 429 the first target's price would have hidden."""
    usage = Collector()
    await usage.start(nats_url, qstack.topology.traffic_subject("usage.recorded"))
    try:
        async with sdk(qstack, "k-cap") as c:
            raw = await c.chat.completions.with_raw_response.create(
                model="fb-dear", messages=[{"role": "user", "content": "hello"}], max_tokens=20
            )
            assert raw.parse().choices[0].message.content
            # 300 output tokens: $0.12 on the first target, $1.20 (past the
            # $1 cap) on the fallback.
            with pytest.raises(openai.RateLimitError) as refused:
                await c.chat.completions.create(
                    model="fb-dear", messages=[{"role": "user", "content": "hello"}], max_tokens=300
                )
        await settled(qstack)
        await asyncio.sleep(0.2)
    finally:
        await usage.close()
    assert raw.headers["x-nexus-routed-model"] == "sim-large"
    assert isinstance(refused.value.body, dict) and refused.value.body["code"] == "QUOTA_EXCEEDED"
    rid = raw.headers["x-nexus-request-id"]
    recorded = [e for e in usage.events if isinstance(e, UsageRecorded) and e.request_id == rid]
    assert len(recorded) == 1 and recorded[0].model == "dear"
    u = recorded[0].usage
    assert recorded[0].cost_usd == pytest.approx((u.prompt_tokens * 1000 + u.completion_tokens * 4000) / 1e6)
    cap = limit(await usage_of(qstack, "k-cap"), "cap")
    assert cap["reserved"] == 0 and cap["spent"] == pytest.approx(recorded[0].cost_usd, abs=1e-9)


async def test_failover_caps_output_at_the_reservation_of_the_target_it_moves_to(qstack: QuotaStack) -> None:
    """No max_tokens from the caller: the first target is reserved for the
    default output budget (4,096), the fallback (a translated Anthropic
    target) for its own 64.  What reaches the fallback asks for at most 64
    tokens: the reservation it holds, not the first target's."""
    async with httpx.AsyncClient() as h:
        await h.delete(qstack.sim.root + "/_sim/requests")
    async with sdk(qstack, "k-fo") as c:
        raw = await c.chat.completions.with_raw_response.create(
            model="fb-claude", messages=[{"role": "user", "content": "hello"}]
        )
        assert raw.parse().choices[0].message.content
    assert raw.headers["x-nexus-routed-model"] == "claude-short"
    async with httpx.AsyncClient() as h:
        seen = (await h.get(qstack.sim.root + "/_sim/requests")).json()["requests"]
    sent = [r for r in seen if r["path"].endswith("/messages")]
    assert len(sent) == 1 and sent[0]["body"]["max_tokens"] == 64
    await settled(qstack)
    fo = limit(await usage_of(qstack, "k-fo"), "fo")
    assert fo["reserved"] == 0 and fo["spent"] > 0
