"""Headless Chromium (Debian's, driven by Playwright; no browser is
downloaded) with the proxy from the served PAC file and the CA in a
throw-away NSS database: an AI host is bumped, a non-AI host is spliced and
the browser sees the real upstream certificate.  The first test takes the
PAC file and the CA from the Hub, as onboarding tells users (the node
follows a real Hub and reports to it); the block page test from the node's
own admin listener (a proxy run without a Hub)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from ingress.proxy.service import RunningProxy, start_proxy
from nexus.sim.server import SimServer
from streams.config import NexusConfig
from streams.config_snapshot import snapshot_from_config
from streams.events_compliance import StageDecision
from streams.events_proxy import ProxyConnection, ProxyJustification
from streams.topology import Topology
from tests.hub.conftest import Client, RunningHub, admin, hub, nc  # noqa: F401 - fixtures
from tests.proxy.conftest import FAKE_HOSTS, SECRET, Events, hub_bumps, proxy_config
from tests.proxy.pki import Pki

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (Path(CHROMIUM).exists() and shutil.which("certutil")),
        reason="needs Debian's chromium and libnss3-tools (scripts/install-test-deps installs them)",
    ),
]


@pytest.fixture
async def served(
    hub: RunningHub,  # noqa: F811
    admin: Client,  # noqa: F811
    upstream: SimServer,
    upstream_pki: Pki,
    proxy_ca: tuple[Path, Path],
    nats_url: str,
    topology: Topology,
    tmp_path: Path,
) -> AsyncIterator[tuple[RunningProxy, Events, str]]:
    """A node following the Hub, once the Hub's PAC file lists it; with
    the Hub's URL."""
    events = Events()
    resolve = {f"{h}:443": f"127.0.0.1:{upstream.port}" for h in FAKE_HOSTS}
    await hub_bumps(admin, proxy_ca, upstream_pki, resolve)
    cfg = proxy_config(proxy_ca, upstream_pki, resolve)
    proxy = await start_proxy(
        snapshot_from_config(cfg, SECRET), events, node_id="px-browser", port=0, admin_port=0
    )
    try:
        await proxy.follow(nats_url, topology, cache_path=tmp_path / "snapshot-px-browser.json")
        anon = Client(hub.url)
        try:
            deadline = time.monotonic() + 10
            while proxy.advertise not in (await anon.get("/proxy.pac")).raw.decode():
                assert time.monotonic() < deadline, "the Hub's PAC never listed the node"
                await asyncio.sleep(0.05)
        finally:
            await anon.close()
        yield proxy, events, hub.url
    finally:
        await proxy.close()


def _nss_home(home: Path, *cas: tuple[str, Path]) -> None:
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True)
    subprocess.run(["certutil", "-N", "-d", f"sql:{db}", "--empty-password"], check=True)
    for name, pem in cas:
        subprocess.run(
            ["certutil", "-A", "-d", f"sql:{db}", "-t", "C,,", "-n", name, "-i", str(pem)], check=True
        )


@pytest.mark.integration  # the Hub: NATS and Postgres
async def test_chromium_through_the_pac_ai_host_bumped_other_host_spliced(
    served: tuple[RunningProxy, Events, str], upstream_pki: Pki, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    proxy, events, hub_url = served
    home = tmp_path / "home"
    # The CA the Hub serves (onboarding) and, standing in for the public
    # roots, the fake upstreams' CA.
    ca = tmp_path / "nexus-ca.pem"
    anon = Client(hub_url)
    try:
        served_ca = (await anon.get("/proxy/ca.pem")).raw
    finally:
        await anon.close()
    assert served_ca == proxy.node.ca_bundle
    ca.write_bytes(served_ca)
    _nss_home(home, ("nexus-proxy", ca), ("public-roots-stand-in", upstream_pki.ca_path))
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM,
            args=[*FLAGS, f"--proxy-pac-url={hub_url}/proxy.pac"],
            env={"HOME": str(home)},
        )
        try:
            page = await browser.new_page()
            seen = {}
            for host in ("api.openai.com", "plain.example.com"):
                resp = await page.goto(f"https://{host}/healthz")
                assert resp is not None and resp.status == 200
                assert (await page.content()).count("ok") >= 1
                details = await resp.security_details()
                assert details is not None
                seen[host] = details.get("issuer", "")
            await page.screenshot(path=str(tmp_path / "bumped-page.png"))
        finally:
            await browser.close()
    assert seen["api.openai.com"] == "Nexus proxy test CA"
    assert seen["plain.example.com"] == "Upstream test CA"
    statuses = {(c.target_host, c.bump_status) for c in events.of(ProxyConnection)}
    assert ("api.openai.com", "bumped") in statuses
    assert ("plain.example.com", "spliced") in statuses


def _shots(tmp_path: Path) -> Path:
    """Where screenshots go: NEXUS_SCREENSHOTS when set (kept), else the
    test's temporary folder."""
    folder = Path(os.environ.get("NEXUS_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def test_chromium_gets_the_block_page_and_proceeds_with_a_justification(
    upstream: SimServer, upstream_pki: Pki, proxy_ca: tuple[Path, Path], tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    events = Events()
    resolve = {f"{h}:443": f"127.0.0.1:{upstream.port}" for h in FAKE_HOSTS}
    base = proxy_config(
        proxy_ca,
        upstream_pki,
        resolve,
        block_page={"justify_hooks": ["no-deepseek"], "contact": "it-help@example.com"},
    )
    cfg = msgspec.convert(
        {
            **msgspec.to_builtins(base),
            "hooks": {
                "pipeline": [
                    {
                        "id": "no-deepseek",
                        "type": "domain-filter",
                        "stage": "connection",
                        "settings": {"mode": "deny", "hosts": ["*.deepseek.com"]},
                    }
                ]
            },
        },
        NexusConfig,
    )
    proxy = await start_proxy(
        snapshot_from_config(cfg, SECRET), events, node_id="px-browser", port=0, admin_port=0
    )
    shots = _shots(tmp_path)
    home = tmp_path / "home"
    ca = tmp_path / "nexus-ca.pem"
    ca.write_bytes(proxy.node.ca_bundle)
    _nss_home(home, ("nexus-proxy", ca), ("public-roots-stand-in", upstream_pki.ca_path))
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(
                executable_path=CHROMIUM,
                args=[*FLAGS, f"--proxy-pac-url={proxy.admin_url}/proxy.pac"],
                env={"HOME": str(home)},
            )
            try:
                page = await browser.new_page()
                resp = await page.goto("https://chat.deepseek.com/healthz")
                assert resp is not None and resp.status == 403
                content = await page.content()
                assert "Blocked by policy" in content and "*.deepseek.com" in content
                assert "it-help@example.com" in content
                details = await resp.security_details()
                assert details is not None and details.get("issuer") == "Nexus proxy test CA"
                await page.screenshot(path=str(shots / "block-page.png"), full_page=True)

                # Too short: refused, the form shown again.
                await page.evaluate("document.querySelector('textarea').removeAttribute('minlength')")
                await page.fill("textarea[name=reason]", "short")
                await page.click("#proceed")
                assert "at least 20 characters" in await page.content()

                reason = "Evaluating DeepSeek for the vendor comparison, ticket PROC-1234"
                await page.fill("textarea[name=reason]", reason)
                await page.click("#proceed")
                await page.wait_for_selector("#continue")
                assert "Justification recorded" in await page.content()
                await page.screenshot(path=str(shots / "justification-page.png"), full_page=True)

                async with page.expect_navigation():
                    await page.click("#continue")
                assert "ok" in await page.content()
                resp = await page.goto("https://chat.deepseek.com/healthz")
                assert resp is not None and resp.status == 200
                details = await resp.security_details()
                # Through, untouched: the browser sees the site's own certificate.
                assert details is not None and details.get("issuer") == "Upstream test CA"
            finally:
                await browser.close()
    finally:
        await proxy.close()
    (just,) = events.of(ProxyJustification)
    assert (just.host, just.hooks, just.justification) == ("chat.deepseek.com", ["no-deepseek"], reason)
    assert just.rule == "*.deepseek.com" and just.until_ms > 0
    conns = [
        (c.bump_status, c.status) for c in events.of(ProxyConnection) if c.target_host == "chat.deepseek.com"
    ]
    assert ("blocked", 200) in conns and ("spliced", 200) in conns
    # After the justification the hook still ran and was recorded, unenforced.
    justified = [e for e in events.of(StageDecision) if e.stage == "connection" and e.decision == "approve"]
    assert any("monitor:block" in e.tags for e in justified)
