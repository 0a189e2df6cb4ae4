"""``nexus proxy`` as a user runs it: its own process (on uvloop), a config
file, a development CA made on first start, events to the real NATS."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from nexus.sim.server import SimServer
from streams.topology import Topology
from tests.proxy.conftest import client_context, http_get, issuer_cn, tls_through
from tests.proxy.pki import Pki

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class _Node:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port


async def test_nexus_proxy_serves_bumped_and_spliced_flows(
    upstream: SimServer, upstream_pki: Pki, tmp_path: Path, nats_url: str, topology: Topology
) -> None:
    config = tmp_path / "nexus.yaml"
    config.write_text(
        f"""
auth:
  secret: proxy-cli-test-secret-0123456789
proxy:
  resolve:
    "api.openai.com:443": "127.0.0.1:{upstream.port}"
    "plain.example.com:443": "127.0.0.1:{upstream.port}"
  tls:
    upstream_ca_files: ["{upstream_pki.ca_path}"]
  interception:
    - host: api.openai.com
      adapter: openai
"""
    )
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
        "--config",
        str(config),
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
        m = re.search(r"listening on http://([\d.]+):(\d+) .*admin, PAC and CA on (http://\S+)", line)
        assert m, line
        node = _Node(m.group(1), int(m.group(2)))
        ca = tmp_path / "data" / "proxy-ca" / "ca.pem"
        assert ca.exists() and (tmp_path / "data" / "proxy-ca" / "ca-key.pem").stat().st_mode & 0o077 == 0
        r, w = await tls_through(node, "api.openai.com", client_context(ca))  # type: ignore[arg-type]
        assert "Nexus development CA" in issuer_cn(w)
        assert (await http_get(r, w, "api.openai.com", "/healthz")) == (200, b"ok")
        r, w = await tls_through(node, "plain.example.com", client_context(upstream_pki.ca_path))  # type: ignore[arg-type]
        assert (await http_get(r, w, "plain.example.com", "/healthz")) == (200, b"ok")
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()[-2000:]
