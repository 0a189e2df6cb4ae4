"""The Hub serves the proxy fleet's PAC file, CA bundle and onboarding text
(issue 16), from what real proxy nodes following a real Hub report: the
PAC lists the online nodes and drops one that stops reporting, the CA is
byte for byte the node's and a client trusting only it completes a bumped
request, a rotation's two CAs are both served, no key is ever reported or
served, and these three routes are the only new public ones."""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest

from hub.fleet.proxies import CA_PATH, ONBOARDING_PATH, PAC_PATH
from ingress.proxy.certs import generate_ca
from ingress.proxy.service import RunningProxy, advertised_address, start_proxy
from nexus.sim.server import SimServer
from streams.config_base import ConfigError
from streams.config_proxy import parse_proxy_address
from streams.config_snapshot import snapshot_from_config
from streams.config_validation import parse_config
from streams.proxy_onboarding import pac_file
from streams.snapshots import node_reports
from streams.topology import Topology
from tests.hub.conftest import Answer, Client, RunningHub, admin, hub, nc  # noqa: F401 - fixtures
from tests.proxy.conftest import (
    FAKE_HOSTS,
    SECRET,
    Events,
    http_get,
    hub_bumps,
    proxy_config,
    tls_through,
)
from tests.proxy.pac import find_proxy, proxies_for
from tests.proxy.pki import Pki

pytestmark = [pytest.mark.integration, pytest.mark.slow]

A = "/api/admin"
BEAT_S = 0.3  # the nodes' report heartbeat here: offline after three missed (0.9 s)


class _Node:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port


async def _node(
    hub_topology: Topology,
    nats_url: str,
    tmp_path: Path,
    cfg: Any,
    node_id: str,
    *,
    upstream: SimServer,
    advertise: str | None = None,
) -> RunningProxy:
    proxy = await start_proxy(
        snapshot_from_config(cfg, SECRET),
        Events(),
        node_id=node_id,
        port=0,
        admin_port=0,
        advertise=advertise,
    )
    await proxy.follow(
        nats_url, hub_topology, cache_path=tmp_path / f"snapshot-{node_id}.json", heartbeat_s=BEAT_S
    )
    return proxy


async def _until(anon: Client, path: str, check: Any, timeout: float = 10.0) -> Answer:
    deadline = time.monotonic() + timeout
    while True:
        ans = await anon.get(path)
        if check(ans):
            return ans
        assert time.monotonic() < deadline, f"{path} never as wanted: {ans}"
        await asyncio.sleep(0.05)


def _pac_proxies(pac: str) -> list[str]:
    """The proxies the PAC gives an AI host, in the order a browser tries them."""
    return proxies_for(pac, "api.openai.com")


def _key_free(raw: bytes, *keys: Path) -> None:
    """No private key, nor any line of the PEM bodies of these key files."""
    assert b"PRIVATE KEY" not in raw
    for key in keys:
        for line in key.read_bytes().splitlines():
            if line and not line.startswith(b"-----"):
                assert line not in raw, f"a line of {key.name} is in the answer"


async def test_the_hub_serves_the_pac_and_ca_of_its_online_proxy_and_drops_it_when_it_stops(
    hub: RunningHub,  # noqa: F811
    admin: Client,  # noqa: F811
    upstream: SimServer,
    upstream_pki: Pki,
    proxy_ca: tuple[Path, Path],
    nats_url: str,
    topology: Topology,
    tmp_path: Path,
) -> None:
    anon = Client(hub.url)  # no credentials, as a browser fetching a PAC
    try:
        # No proxy yet: a PAC that goes direct and says why; no CA to trust.
        empty = await anon.get(PAC_PATH)
        assert empty.status == 200 and empty.headers["Content-Type"].startswith(
            "application/x-ns-proxy-autoconfig"
        )
        assert "No Nexus proxy node is online" in empty.raw.decode() and "PROXY" not in empty.raw.decode()
        none = await anon.get(CA_PATH)
        assert (none.status, none.error) == (404, "not_found") and none.json["error"]["request_id"]

        resolve = {f"{h}:443": f"127.0.0.1:{upstream.port}" for h in FAKE_HOSTS}
        await hub_bumps(admin, proxy_ca, upstream_pki, resolve)
        cfg = proxy_config(proxy_ca, upstream_pki, resolve)
        proxy = await _node(topology, nats_url, tmp_path, cfg, "px-fleet-1", upstream=upstream)
        stopped = False
        try:
            address = f"127.0.0.1:{proxy.node.port}"
            assert proxy.advertise == address  # bound to an address: that one
            pac = await _until(anon, PAC_PATH, lambda a: address in a.raw.decode())
            assert _pac_proxies(pac.raw.decode()) == [address]
            assert 'return "DIRECT"' in pac.raw.decode() and "isPlainHostName" in pac.raw.decode()

            ca = await anon.get(CA_PATH)
            assert ca.status == 200 and ca.headers["Content-Type"].startswith("application/x-pem-file")
            assert ca.raw == proxy_ca[0].read_bytes()  # byte for byte the node's CA certificate

            # A client that trusts only the Hub's CA, through the proxy the
            # PAC names: a bumped request completes.
            host, port = parse_proxy_address(_pac_proxies(pac.raw.decode())[0])
            assert port is not None
            ctx = ssl.create_default_context(cadata=ca.raw.decode())
            r, w = await tls_through(_Node(host, port), "api.openai.com", ctx)  # type: ignore[arg-type]
            assert (await http_get(r, w, "api.openai.com", "/healthz")) == (200, b"ok")

            guide = await anon.get(ONBOARDING_PATH)
            text = guide.raw.decode()
            assert guide.status == 200 and guide.headers["Content-Type"].startswith("text/plain")
            for wanted in (
                f"{hub.url}{PAC_PATH}",
                f"{hub.url}{CA_PATH}",
                f"http://{address}",
                "SSL_CERT_FILE",
                "REQUESTS_CA_BUNDLE",
                "NODE_EXTRA_CA_CERTS",
                "certutil",
                "--cacert nexus-ca.pem",
            ):
                assert wanted in text, wanted

            # What the node reports holds its address and certificate, no key;
            # nor does anything the Hub serves.
            conn = await nats.connect(nats_url)
            try:
                reports = [
                    r for r in await node_reports(conn.jetstream(), topology) if r.node_id == "px-fleet-1"
                ]
            finally:
                await conn.close()
            assert reports and reports[0].proxy is not None
            assert reports[0].proxy.address == address
            assert reports[0].proxy.ca_certificates == (proxy_ca[0].read_text(),)
            for raw in (msgspec.json.encode(reports[0]), pac.raw, ca.raw, guide.raw):
                _key_free(raw, proxy_ca[1])
            # The admin's view of the fleet shows the same (authenticated).
            thing = await admin.get(f"{A}/things/proxy.px-fleet-1")
            assert thing.status == 200 and thing.json["status"] == "online"
            assert thing.json["shadow"]["reported"]["proxy"]["address"] == address
            assert (await anon.get(f"{A}/things/proxy.px-fleet-1")).status == 401

            # It stops: three missed heartbeats and the PAC leaves it out.
            await proxy.close()
            stopped = True
            t0 = time.monotonic()
            gone = await _until(anon, PAC_PATH, lambda a: address not in a.raw.decode())
            print(f"\nproxy node out of the Hub's PAC {time.monotonic() - t0:.2f} s after it stopped")
            assert "No Nexus proxy node is online" in gone.raw.decode()
            assert (await anon.get(CA_PATH)).status == 404
        finally:
            if not stopped:
                await proxy.close()
    finally:
        await anon.close()


async def test_a_rotation_serves_both_cas_once_and_every_node_in_a_stable_order(
    hub: RunningHub,  # noqa: F811
    admin: Client,  # noqa: F811
    upstream: SimServer,
    upstream_pki: Pki,
    proxy_ca: tuple[Path, Path],
    nats_url: str,
    topology: Topology,
    tmp_path: Path,
) -> None:
    """Node a signs with a new CA and still publishes the old one (the
    rotation); node b, not rotated yet, signs with the old one and is
    advertised under a name of its own."""
    new_cert, new_key = tmp_path / "new-ca.pem", tmp_path / "new-ca-key.pem"
    generate_ca(new_cert, new_key, name="Nexus proxy rotated CA")
    resolve = {f"{h}:443": f"127.0.0.1:{upstream.port}" for h in FAKE_HOSTS}
    await hub_bumps(admin, proxy_ca, upstream_pki, resolve)
    rotating = proxy_config(
        proxy_ca,
        upstream_pki,
        resolve,
        tls={
            "cas": [{"cert_file": str(new_cert), "key_file": str(new_key)}, {"cert_file": str(proxy_ca[0])}]
        },
    )
    old = proxy_config(proxy_ca, upstream_pki, resolve)
    a = await _node(topology, nats_url, tmp_path, rotating, "px-rot-a", upstream=upstream)
    b = await _node(
        topology, nats_url, tmp_path, old, "px-rot-b", upstream=upstream, advertise="proxy-b.example.test"
    )
    anon = Client(hub.url)
    try:
        assert b.advertise == f"proxy-b.example.test:{b.node.port}"  # no port given: the bound one
        want = sorted([a.advertise, b.advertise])
        pac = await _until(anon, PAC_PATH, lambda r: sorted(_pac_proxies(r.raw.decode())) == want)
        # The same list every time (sorted: nodes behind one balancer
        # advertising one name appear once).
        assert (await anon.get(PAC_PATH)).raw == pac.raw
        ca = await anon.get(CA_PATH)
        assert ca.raw == new_cert.read_bytes() + proxy_ca[0].read_bytes()  # each once, signing first
        assert ca.raw.count(b"BEGIN CERTIFICATE") == 2
        _key_free(ca.raw + pac.raw, new_key, proxy_ca[1])
        # Both certificates verify what each node mints.
        ctx = ssl.create_default_context(cadata=ca.raw.decode())
        for node in (a, b):
            r, w = await tls_through(node.node, "api.openai.com", ctx)
            assert (await http_get(r, w, "api.openai.com", "/healthz")) == (200, b"ok")
    finally:
        await anon.close()
        await a.close()
        await b.close()


async def test_only_the_three_proxy_routes_are_new_public_ones(
    hub: RunningHub,  # noqa: F811
) -> None:
    """Every route of the Hub outside the admin API's document, called with
    no credentials: only health, metrics, the document itself and the three
    proxy routes answer; the document's public operations are the sign-in
    ones and agent enrolment, as before."""
    anon = Client(hub.url)
    try:
        doc = (await anon.get("/openapi.json")).json
        public_ops = {
            (m.upper(), p)
            for p, item in doc["paths"].items()
            for m, op in item.items()
            if op.get("security") == []
        }
        assert public_ops == {
            ("POST", f"{A}/auth/login"),
            ("GET", f"{A}/auth/oidc/{{provider}}/login"),
            ("GET", f"{A}/auth/oidc/{{provider}}/callback"),
            ("POST", "/api/agents/enrol"),
        }
        assert hub.server._runner is not None
        app = hub.server._runner.app
        answered: set[str] = set()
        for route in app.router.routes():
            info = route.resource.get_info() if route.resource is not None else {}
            path = str(info.get("path") or info.get("formatter") or "")
            if route.method == "HEAD" or path in doc["paths"] or not path:
                continue
            concrete = re.sub(r"\{[^}]+\}", "x", path)
            ans = await anon.call(route.method, concrete, {} if route.method != "GET" else None)
            if ans.status not in (401, 403):
                answered.add(path)
        assert answered == {"/openapi.json", "/healthz", "/metrics", PAC_PATH, CA_PATH, ONBOARDING_PATH}
    finally:
        await anon.close()


def test_advertised_addresses_and_a_pac_that_cannot_be_written_into() -> None:
    assert advertised_address("", "10.0.0.5", 3128) == "10.0.0.5:3128"
    assert advertised_address("", "::1", 3128) == "[::1]:3128"
    assert advertised_address("proxy.corp.example:8080", "0.0.0.0", 3128) == "proxy.corp.example:8080"
    wildcard = advertised_address("", "0.0.0.0", 3128)
    assert wildcard.endswith(":3128") and not wildcard.startswith("0.0.0.0")  # the hostname
    for bad in ('evil";alert(1);"', "a b:1", "x:0", "x:http", "[nope]:1"):
        with pytest.raises(ConfigError, match=r"proxy\.advertise"):
            parse_proxy_address(bad)
    with pytest.raises(ConfigError, match=r"proxy\.advertise"):
        parse_config(b"proxy: {advertise: 'two words'}\n", source="t.yaml")
    assert sorted(_pac_proxies(pac_file(["a.example:3128", "[fd00::1]:3128"]))) == [
        "[fd00::1]:3128",
        "a.example:3128",
    ]


def test_a_fleet_pac_spreads_hosts_and_keeps_each_host_on_one_node() -> None:
    nodes = ["px-a.example:3128", "px-b.example:3128", "px-c.example:3128"]
    pac = pac_file(nodes)
    hosts = [f"svc{i}.example.com" for i in range(300)] + ["api.openai.com", "api.anthropic.com"]
    answers = find_proxy(pac, hosts)
    first: dict[str, int] = {}
    for answer in answers.values():
        tried = answer.split("; ")
        # Every node once, then direct: a node that does not answer is
        # passed over, and with none the browser still gets out.
        assert tried[-1] == "DIRECT" and sorted(t.removeprefix("PROXY ") for t in tried[:-1]) == nodes
        first[tried[0]] = first.get(tried[0], 0) + 1
    # Spread: each node is first for a fair share of 302 hosts.
    assert len(first) == 3 and min(first.values()) >= 60, first
    # One host, one order, every time (its leaf and pinning state stay on one node).
    assert find_proxy(pac, ["api.openai.com"]) == {"api.openai.com": answers["api.openai.com"]}
    # Private and plain names stay direct, whatever the fleet.
    private = find_proxy(pac, ["localhost", "intranet", "10.1.2.3", "192.168.0.7", "127.0.0.1"])
    assert set(private.values()) == {"DIRECT"}
    # One node: the plain form.
    assert find_proxy(pac_file(nodes[:1]), ["api.openai.com"]) == {
        "api.openai.com": "PROXY px-a.example:3128; DIRECT"
    }


def test_nexus_proxy_refuses_a_malformed_advertise(capsys: pytest.CaptureFixture[str]) -> None:
    from ingress.proxy.cli import main

    assert main(["--hub", "--advertise", "not a host"]) == 2
    assert "--advertise" in capsys.readouterr().err
