"""``POST /internal/routing/explain``: admin-only, and it says which target
a request would take and why (health and key included)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.routing.conftest import ADMIN, RoutedStack


async def ask(s: RoutedStack, body: Any, token: str | None = ADMIN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient() as h:
        return await h.post(s.base + "/internal/routing/explain", json=body, headers=headers)


async def test_explain_needs_the_admin_token(routed: RoutedStack) -> None:
    for token in (None, "wrong", routed.key):
        r = await ask(routed, {"model": "fb-503"}, token)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_admin_token"


async def test_explain_conditional_by_header(routed: RoutedStack) -> None:
    gold = (await ask(routed, {"model": "tiered", "headers": {"X-Tier": "gold"}})).json()
    assert gold["target"] == "backup" and gold["rule"] == "tiered"
    assert any("condition 0 matched" in s for s in gold["steps"])
    other = (await ask(routed, {"model": "tiered"})).json()
    assert other["target"] == "switchy"
    assert any("default" in s for s in other["steps"])


async def test_explain_applies_the_key(routed: RoutedStack) -> None:
    out = (await ask(routed, {"model": "fb-503", "key_id": "k-narrow"})).json()
    assert [c["model"] for c in out["candidates"]] == ["flaky"]
    assert out["refused_for_key"] == ["backup"]
    assert out["fallback_on"] == ["429", "5xx", "network", "timeout"]


async def test_explain_bad_input_is_a_clear_400(routed: RoutedStack) -> None:
    r = await ask(routed, {"modle": "x"})
    assert r.status_code == 400 and "Invalid request" in r.json()["error"]["message"]
    r = await ask(routed, {"model": "nope"})
    assert r.status_code == 404


async def test_explain_shows_health_after_failures(routed: RoutedStack) -> None:
    import openai

    async with openai.AsyncOpenAI(base_url=routed.url, api_key=routed.key, max_retries=0) as c:
        for _ in range(3):
            await c.chat.completions.create(model="fb-503", messages=[{"role": "user", "content": "hi"}])
    out = (await ask(routed, {"model": "fb-503"})).json()
    assert [(c["model"], c["health"]) for c in out["candidates"]] == [
        ("backup", "healthy"),
        ("flaky", "unavailable"),
    ]
