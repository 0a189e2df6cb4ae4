"""Per-hook and total timeouts, fail-open vs fail-closed, against a real
slow HTTP endpoint (the webhook hook)."""

# ruff: noqa: E501 - YAML config tables read better unwrapped

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from ingress.hooks import Verdict
from tests.hooks.conftest import CONN, chat


@pytest.fixture
async def judge():
    """A local judge service: /slow sleeps, /block blocks, /echo records."""
    seen: list[dict] = []

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.6)
        return web.json_response({"verdict": "approve"})

    async def block(request: web.Request) -> web.Response:
        seen.append({"headers": dict(request.headers), "body": await request.json()})
        return web.json_response({"verdict": "block", "reason": "judge says no", "rule": "llm-judge"})

    async def approve(request: web.Request) -> web.Response:
        seen.append({"headers": dict(request.headers), "body": await request.json()})
        return web.json_response({"verdict": "approve", "tags": ["judge:ok"]})

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500)

    app = web.Application()
    app.router.add_post("/slow", slow)
    app.router.add_post("/block", block)
    app.router.add_post("/approve", approve)
    app.router.add_post("/broken", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


def webhook(
    url: str, *, fail: str, timeout_ms: int = 150, mode: str = "redacted", hid: str = "judge", prio: int = 50
) -> str:
    return (
        f"  - {{id: {hid}, type: webhook-forward, fail: {fail}, timeout_ms: {timeout_ms}, priority: {prio},"
        f" settings: {{url: '{url}', allow_private_network: true, payload_mode: {mode}, timeout_ms: 5000}}}}\n"
    )


async def test_timeout_fail_open_approves(make_engine, judge) -> None:
    base, _ = judge
    engine = make_engine("pipeline:\n" + webhook(f"{base}/slow", fail="open"))
    out = await engine.evaluate_request(chat("hello"), CONN)
    rec = out.result.records[0]
    assert (rec.verdict, rec.effective, rec.reason_code) == ("timeout", Verdict.APPROVE, "hook_timeout")
    assert out.result.decision is Verdict.APPROVE
    assert 100_000 <= rec.elapsed_us < 1_000_000


async def test_timeout_fail_closed_blocks(make_engine, judge) -> None:
    base, _ = judge
    engine = make_engine("pipeline:\n" + webhook(f"{base}/slow", fail="closed"))
    out = await engine.evaluate_request(chat("hello"), CONN)
    assert out.result.blocked
    assert (out.result.blocking_hook, out.result.blocking_rule, out.result.reason_code) == (
        "judge",
        "fail-closed",
        "hook_timeout",
    )


async def test_error_fail_open_vs_closed(make_engine, judge) -> None:
    base, _ = judge
    engine = make_engine(
        "pipeline:\n"
        + webhook(f"{base}/broken", fail="open", hid="a", prio=1)
        + webhook(f"{base}/broken", fail="closed", hid="b", prio=2)
    )
    out = await engine.evaluate_request(chat("hello"), CONN)
    assert [(r.hook, r.verdict, r.effective) for r in out.result.records] == [
        ("a", "error", Verdict.APPROVE),
        ("b", "error", Verdict.BLOCK),
    ]
    assert "HTTP 500" in out.result.records[0].reason


async def test_total_budget_stops_the_stage(make_engine, judge) -> None:
    base, _ = judge
    engine = make_engine(
        "total_timeout_ms: 200\npipeline:\n"
        + webhook(f"{base}/slow", fail="open", hid="first", prio=1, timeout_ms=1000)
        + webhook(f"{base}/approve", fail="closed", hid="second", prio=2, timeout_ms=1000)
    )
    out = await engine.evaluate_request(chat("hello"), CONN)
    first, second = out.result.records
    assert first.verdict == "timeout" and first.elapsed_us < 600_000
    assert (second.verdict, second.reason_code, second.effective) == (
        "timeout",
        "pipeline_timeout",
        Verdict.BLOCK,
    )


async def test_webhook_verdict_and_payload_modes(make_engine, judge, monkeypatch) -> None:
    base, seen = judge
    monkeypatch.setenv("NEXUS_TEST_HOOK_SECRET", "s3cret-s3cret-s3cret")
    engine = make_engine(
        "pipeline:\n"
        "  - {id: pii, type: pii-detector, priority: 1}\n"
        "  - {id: meta, type: webhook-forward, priority: 2, settings: {url: '" + base + "/approve', "
        "allow_private_network: true, payload_mode: metadata-only, secret_env: NEXUS_TEST_HOOK_SECRET}}\n"
        "  - {id: red, type: webhook-forward, priority: 3, settings: {url: '" + base + "/approve', "
        "allow_private_network: true, payload_mode: redacted}}\n"
        "  - {id: full, type: webhook-forward, priority: 4, settings: {url: '" + base + "/block', "
        "allow_private_network: true, payload_mode: full}}\n"
    )
    out = await engine.evaluate_request(chat("card 4111 1111 1111 1111"), CONN)
    assert out.result.blocked and out.result.blocking_rule == "llm-judge"
    meta, red, full = (s["body"] for s in seen)
    assert "text" not in meta and "payload" not in meta and meta["org_id"] == "acme"
    assert seen[0]["headers"]["x-nexus-signature"].startswith("sha256=")
    assert red["text"] == "card [REDACTED_CREDIT_CARD]"  # what earlier hooks left
    assert full["payload"]["messages"][0]["content"] == "card 4111 1111 1111 1111"
    assert "judge:ok" in out.result.tags


async def test_webhook_ssrf_guard_at_connect_time(make_engine, judge) -> None:
    """Config load refuses private literals; a host NAME that resolves to a
    private address is refused when the hook connects (DNS may change after
    load)."""
    from ingress.hooks.builtin.webhook import WebhookError, _PublicOnlyResolver

    resolver = _PublicOnlyResolver()
    with pytest.raises(WebhookError, match="non-public address"):
        await resolver.resolve("localhost", 80)
    await resolver.close()
