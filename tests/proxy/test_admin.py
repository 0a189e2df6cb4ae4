"""The admin listener: health, metrics, PAC, CA, onboarding, and the
node's break-glass switch (token, audit events, revert by itself)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ingress.proxy.service import RunningProxy, start_proxy
from nexus.sim.server import SimServer
from streams.config_snapshot import snapshot_from_config
from streams.events_proxy import ProxyBreakGlass
from tests.proxy.conftest import SECRET, Events, client_context, issuer_cn, proxy_config, tls_through
from tests.proxy.pki import Pki

TOKEN = "node-admin-token-for-tests-0123"


@pytest.fixture
async def running(
    upstream: SimServer, upstream_pki: Pki, proxy_ca: tuple[Path, Path]
) -> AsyncIterator[tuple[RunningProxy, Events]]:
    events = Events()
    resolve = {"api.openai.com:443": f"127.0.0.1:{upstream.port}"}
    cfg = proxy_config(proxy_ca, upstream_pki, resolve)
    proxy = await start_proxy(
        snapshot_from_config(cfg, SECRET),
        events,
        node_id="px-admin",
        port=0,
        admin_port=0,
        env={"NEXUS_PROXY_ADMIN_TOKEN": TOKEN},
    )
    yield proxy, events
    await proxy.close()


async def _get(url: str, **kw: Any) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as s, s.get(url, **kw) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.text()


async def test_health_metrics_pac_ca_and_onboarding(
    running: tuple[RunningProxy, Events], proxy_ca: tuple[Path, Path]
) -> None:
    proxy, _ = running
    status, _, body = await _get(f"{proxy.admin_url}/healthz")
    assert status == 200 and '"status":"ok"' in body and '"kill_switch":false' in body
    status, _, body = await _get(f"{proxy.admin_url}/metrics")
    assert status == 200 and "nexus_proxy_active_tunnels" in body and "nexus_proxy_kill_switch 0.0" in body
    status, ctype, body = await _get(f"{proxy.admin_url}/proxy.pac")
    assert ctype.startswith("application/x-ns-proxy-autoconfig")
    assert f'return "PROXY 127.0.0.1:{proxy.node.port}; DIRECT"' in body
    status, ctype, body = await _get(f"{proxy.admin_url}/ca.pem")
    assert status == 200 and body.encode() == proxy_ca[0].read_bytes()
    status, _, body = await _get(f"{proxy.admin_url}/onboarding")
    assert "SSL_CERT_FILE" in body and "NODE_EXTRA_CA_CERTS" in body and "certutil" in body


async def test_break_glass_needs_the_token_is_audited_and_splices(
    running: tuple[RunningProxy, Events], upstream_pki: Pki
) -> None:
    proxy, events = running
    url = f"{proxy.admin_url}/break-glass"
    body = {"reason": "TLS bump breaks the payroll app, INC-42", "duration_s": 600}
    async with aiohttp.ClientSession() as s:
        async with s.put(url, json=body) as r:
            assert r.status == 401
        async with s.put(url, json=body, headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with s.put(url, json={"reason": "short", "duration_s": 60}, headers=auth) as r:
            assert r.status == 400 and "reason" in await r.text()
        async with s.put(url, json={**body, "duration_s": 9 * 3600}, headers=auth) as r:
            assert r.status == 400 and "duration_s" in await r.text()
        async with s.put(url, json=body, headers=auth) as r:
            assert r.status == 200
        _, writer = await tls_through(proxy.node, "api.openai.com", client_context(upstream_pki.ca_path))
        assert "Upstream test CA" in issuer_cn(writer)  # spliced while engaged
        writer.close()
        async with s.delete(url, headers=auth) as r:
            assert r.status == 200 and '"engaged":false' in await r.text()
    audit = [(e.action, e.reason) for e in events.of(ProxyBreakGlass)]
    assert audit == [("engaged", body["reason"]), ("released", "")]


async def test_break_glass_reverts_by_itself_and_says_so(running: tuple[RunningProxy, Events]) -> None:
    proxy, events = running
    now = [dt.datetime(2026, 1, 1, 9, 0, tzinfo=dt.UTC)]
    kill = proxy.node.kill
    kill._clock = lambda: now[0]
    kill.engage("database migration window, INC-7 runbook", dt.timedelta(hours=8), actor="ops")
    assert kill.state().engaged
    now[0] += dt.timedelta(hours=8, seconds=1)  # the injected clock runs out
    assert not kill.state().engaged
    await asyncio.sleep(0)
    assert [e.action for e in events.of(ProxyBreakGlass)] == ["engaged", "expired"]
