"""The proxy fed by the Hub (must-show 4, kill switch): a proxy following
the Hub's snapshots takes its interception domains from the Hub's proxy
settings, and the fleet kill switch (the Hub's command) turns bumping off
for new connections -- measured from the command to the first new
connection spliced, and back."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ingress.proxy.service import RunningProxy, start_proxy
from nexus.sim.server import SimServer
from streams.config_snapshot import snapshot_from_config
from streams.events_proxy import ProxyConnection
from streams.topology import Topology
from tests.hub.conftest import ADMIN_EMAIL, Client, RunningHub, admin, hub, nc  # noqa: F401 - fixtures
from tests.proxy.conftest import (
    FAKE_HOSTS,
    SECRET,
    Events,
    basic,
    client_context,
    http_get,
    issuer_cn,
    proxy_config,
    tls_through,
    tunnel,
)
from tests.proxy.pki import Pki

pytestmark = [pytest.mark.integration, pytest.mark.slow]

A = "/api/admin"


async def _issuer(proxy: RunningProxy, ctx: Any) -> str:
    _, writer = await tls_through(proxy.node, "api.openai.com", ctx)
    try:
        return issuer_cn(writer)
    finally:
        writer.close()


async def _until(proxy: RunningProxy, ctx: Any, wanted: str, timeout: float = 10.0) -> float:
    """Seconds until a new connection to api.openai.com shows ``wanted`` as issuer."""
    start = time.monotonic()
    while wanted not in await _issuer(proxy, ctx):
        if time.monotonic() - start > timeout:
            raise AssertionError(f"never {wanted}")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def test_the_fleet_kill_switch_from_the_hub_reaches_the_proxy_within_2s(
    hub: RunningHub,  # noqa: F811
    admin: Client,  # noqa: F811
    upstream: SimServer,
    upstream_pki: Pki,
    proxy_ca: tuple[Path, Path],
    nats_url: str,
    topology: Topology,
    tmp_path: Path,
) -> None:
    resolve = {f"{h}:443": f"127.0.0.1:{upstream.port}" for h in FAKE_HOSTS}
    local = proxy_config(proxy_ca, upstream_pki, resolve, interception=[])
    # The Hub's proxy settings: what the node takes once it follows the Hub.
    section = (await admin.get(f"{A}/settings/proxy")).json
    wanted = {
        **section,
        "tls": {
            **section["tls"],
            "cas": [{"cert_file": str(proxy_ca[0]), "key_file": str(proxy_ca[1])}],
            "upstream_ca_files": [str(upstream_pki.ca_path)],
        },
        "resolve": resolve,
        "interception": [{"host": "api.openai.com", "adapter": "openai"}],
    }
    put = await admin.put(f"{A}/settings/proxy", wanted)
    assert put.status == 200, put
    events = Events()
    proxy = await start_proxy(
        snapshot_from_config(local, SECRET), events, node_id="px-hub", port=0, admin_port=0
    )
    try:
        ctx = client_context(proxy_ca[0], upstream_pki.ca_path)
        # Not listed locally: spliced, the upstream's own certificate.
        assert "Upstream test CA" in await _issuer(proxy, ctx)
        await proxy.follow(nats_url, topology, cache_path=tmp_path / "snapshot-proxy.json")
        # The Hub lists it: bumped, our leaf.
        await _until(proxy, ctx, "Nexus proxy test CA")

        t0 = time.monotonic()
        ans = await admin.post(f"{A}/kill-switch/engage", {"reason": "incident 43: the bump breaks an app"})
        answered = time.monotonic() - t0
        assert ans.status == 200 and ans.json["engaged"], ans
        on = answered + await _until(proxy, ctx, "Upstream test CA")
        t0 = time.monotonic()
        assert (await admin.post(f"{A}/kill-switch/release", {})).status == 200
        off = time.monotonic() - t0 + await _until(proxy, ctx, "Nexus proxy test CA")
    finally:
        await proxy.close()
    print(
        f"\nmust-show 4 (proxy kill switch): new connections spliced {on * 1000:.0f} ms after the Hub's "
        f"command (the Hub answered in {answered * 1000:.0f} ms), bumped again {off * 1000:.0f} ms after "
        "the release"
    )
    assert on < 2.0 and off < 2.0
    statuses = [c.bump_status for c in events.of(ProxyConnection)]
    assert "kill_switch" in statuses and statuses[-1] == "bumped"


class _Node:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port


async def test_nexus_proxy_runs_on_the_hubs_configuration_alone(
    hub: RunningHub,  # noqa: F811
    admin: Client,  # noqa: F811
    upstream: SimServer,
    upstream_pki: Pki,
    proxy_ca: tuple[Path, Path],
    nats_url: str,
    topology: Topology,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``nexus proxy --hub`` with no config file: it starts on the Hub's
    first snapshot and follows the later ones (here: a host taken out of
    interception is spliced from then on)."""
    from ingress.proxy.cli import main

    assert main([]) == 2  # neither --config nor --hub
    assert "--hub" in capsys.readouterr().err

    resolve = {f"{h}:443": f"127.0.0.1:{upstream.port}" for h in FAKE_HOSTS}
    section = (await admin.get(f"{A}/settings/proxy")).json
    wanted = {
        **section,
        "tls": {
            **section["tls"],
            "cas": [{"cert_file": str(proxy_ca[0]), "key_file": str(proxy_ca[1])}],
            "upstream_ca_files": [str(upstream_pki.ca_path)],
        },
        "resolve": resolve,
        "interception": [{"host": "api.openai.com", "adapter": "openai"}],
    }
    assert (await admin.put(f"{A}/settings/proxy", wanted)).status == 200
    env = {
        **os.environ,
        "NEXUS_NATS_URL": nats_url,
        "NEXUS_STREAM_PREFIX": topology.prefix,
        "NEXUS_PROXY_ADMIN_TOKEN": "t" * 24,
    }
    env.pop("NEXUS_VALKEY_URL", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nexus.cli",
        "proxy",
        "--hub",
        "--port",
        "0",
        "--admin-port",
        "0",
        "--data-dir",
        str(tmp_path / "data"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        m = re.search(r"listening on http://([\d.]+):(\d+) ", line)
        assert m, line
        node: Any = _Node(m.group(1), int(m.group(2)))
        # Started after its follower, it reports its address all the same:
        # the Hub's PAC file lists it.
        assert f"reported to the Hub as {m.group(1)}:{m.group(2)}" in line
        anon = Client(hub.url)
        try:
            deadline = time.monotonic() + 10
            while f"PROXY {m.group(1)}:{m.group(2)};" not in (await anon.get("/proxy.pac")).raw.decode():
                assert time.monotonic() < deadline, "the Hub's PAC never listed the node"
                await asyncio.sleep(0.05)
        finally:
            await anon.close()
        ctx = client_context(proxy_ca[0], upstream_pki.ca_path)
        r, w = await tls_through(node, "api.openai.com", ctx)
        assert "Nexus proxy test CA" in issuer_cn(w)  # bumped: the Hub lists the host
        assert (await http_get(r, w, "api.openai.com", "/healthz")) == (200, b"ok")
        # The Hub's users sign in with their own e-mail and password
        # (tests/proxy/test_hub_users.py has the rest).
        for password, wanted_status in ((hub.admin_password, 200), ("not-the-password", 407)):
            _, w, status, head = await tunnel(node, "api.openai.com:443", basic(ADMIN_EMAIL, password))
            w.close()
            assert status == wanted_status, head
        assert (await admin.put(f"{A}/settings/proxy", {**wanted, "interception": []})).status == 200
        start = time.monotonic()
        while True:
            _, w = await tls_through(node, "api.openai.com", ctx)
            issuer = issuer_cn(w)
            w.close()
            if "Upstream test CA" in issuer:
                break  # spliced: the node applied the Hub's next snapshot
            assert time.monotonic() - start < 10, issuer
            await asyncio.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert (tmp_path / "data" / f"snapshot-proxy-{socket.gethostname()}.json").exists()
