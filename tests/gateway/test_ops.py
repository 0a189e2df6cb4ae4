"""/healthz and /metrics: what an operator's probe and Prometheus see."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway.conftest import Stack


def _sample(text: str, name: str, labels: dict[str, str]) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


async def test_healthz(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http, http.get(stack.url.removesuffix("/v1") + "/healthz") as r:
        body = await r.json()
    assert r.status == 200 and body == {
        "status": "ok",
        "node": "gw-test",
        "config_version": stack.snapshot.version,
        "config_revision": stack.snapshot.revision,
    }


async def test_metrics_count_requests_by_status_and_model(stack: Stack) -> None:
    root = stack.url.removesuffix("/v1")
    auth = {"Authorization": f"Bearer {stack.keys.full}"}
    chat = {"model": "sim-small", "messages": [{"role": "user", "content": "m"}]}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{root}/metrics") as r:
            before = await r.text()
        for _ in range(3):
            async with http.post(f"{stack.url}/chat/completions", json=chat, headers=auth) as r:
                assert r.status == 200
        async with http.post(
            f"{stack.url}/chat/completions", json={**chat, "model": 'evil"label'}, headers=auth
        ):
            pass
        async with http.post(
            f"{stack.url}/chat/completions", json={**chat, "stream": True}, headers=auth
        ) as r:
            await r.read()
        async with http.get(f"{root}/metrics") as r:
            assert r.headers["Content-Type"].startswith("text/plain")
            after = await r.text()

    def delta(name: str, labels: dict[str, str]) -> float:
        return _sample(after, name, labels) - _sample(before, name, labels)

    assert delta("nexus_gateway_requests_total", {"status": "200", "model": "sim-small"}) == 4
    # An unknown model is counted without echoing the caller's text as a label.
    assert delta("nexus_gateway_requests_total", {"status": "404", "model": ""}) == 1
    assert "evil" not in after
    assert (
        delta("nexus_gateway_request_duration_seconds_count", {"model": "sim-small", "stream": "false"}) == 3
    )
    assert (
        delta("nexus_gateway_request_duration_seconds_count", {"model": "sim-small", "stream": "true"}) == 1
    )
    assert delta("nexus_gateway_ttft_seconds_count", {"model": "sim-small"}) == 1
    assert _sample(after, "nexus_gateway_inflight_requests", {}) == 0
