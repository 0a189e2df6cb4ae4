"""Fixtures of the proxy tests: real TLS everywhere.  Fake upstreams are
real local TLS servers (the simulated provider speaks the OpenAI and
Anthropic formats) with certificates from a test CA of their own, reached
through the proxy's resolve override; the proxy bumps with a CA of its own."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from ingress.proxy.certs import generate_ca
from ingress.proxy.node import ProxyNode
from nexus.sim.server import SimServer, start_sim
from streams.config import NexusConfig
from streams.config_snapshot import snapshot_from_config
from streams.events import Event
from streams.jetstream import connect, delete_streams, ensure_streams
from streams.publisher import Publisher
from streams.topology import Topology
from tests.proxy.pki import Pki

SECRET = b"proxy-test-hmac-secret-0123456789"
FAKE_HOSTS = [
    "api.openai.com",
    "api.anthropic.com",
    "plain.example.com",
    "expired.example.com",
    "chat.deepseek.com",
    "generativelanguage.googleapis.com",
    "us-central1-aiplatform.googleapis.com",
    "aiplatform.googleapis.com",
]


class Events:
    """The node's emitter: keeps what it was given (the NATS path is tested
    in test_events)."""

    def __init__(self) -> None:
        self.items: list[Event] = []

    def emit(self, event: Event) -> None:
        self.items.append(event)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.items if isinstance(e, kind)]


@pytest.fixture(scope="session")
def upstream_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("upstream-pki"))


@pytest.fixture(scope="session")
def proxy_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("proxy-ca")
    cert, key = folder / "ca.pem", folder / "ca-key.pem"
    generate_ca(cert, key, name="Nexus proxy test CA")
    return cert, key


@pytest.fixture
async def upstream(upstream_pki: Pki) -> AsyncIterator[SimServer]:
    """The simulated provider on TLS, with a valid certificate for every
    fake host (the resolve override sends them all here)."""
    sim = await start_sim(host="127.0.0.1", port=0, ssl_context=upstream_pki.server_context(FAKE_HOSTS))
    yield sim
    await sim.close()


@pytest.fixture
async def expired_upstream(upstream_pki: Pki) -> AsyncIterator[SimServer]:
    sim = await start_sim(
        host="127.0.0.1", port=0, ssl_context=upstream_pki.server_context(FAKE_HOSTS, expired=True)
    )
    yield sim
    await sim.close()


def proxy_config(
    proxy_ca: tuple[Path, Path], upstream_pki: Pki, resolve: dict[str, str], **proxy: Any
) -> NexusConfig:
    section: dict[str, Any] = {
        "tls": {
            "cas": [{"cert_file": str(proxy_ca[0]), "key_file": str(proxy_ca[1])}],
            "upstream_ca_files": [str(upstream_pki.ca_path)],
        },
        "resolve": resolve,
        "interception": [
            {"host": "api.openai.com", "adapter": "openai"},
            {"host": "api.anthropic.com", "adapter": "anthropic"},
            {"host": "expired.example.com"},
        ],
    }
    for k, v in proxy.items():
        section[k] = {**section[k], **v} if isinstance(v, dict) and isinstance(section.get(k), dict) else v
    return msgspec.convert({"proxy": section}, NexusConfig)


MakeProxy = Callable[..., Awaitable[ProxyNode]]


@pytest.fixture
async def make_proxy(proxy_ca: tuple[Path, Path], upstream_pki: Pki) -> AsyncIterator[MakeProxy]:
    nodes: list[ProxyNode] = []

    async def make(
        upstream: SimServer | None = None, *, events: Events | None = None, node_id: str = "px-1", **kw: Any
    ) -> ProxyNode:
        resolve = kw.pop("resolve", None)
        if resolve is None:
            resolve = {f"{h}:443": f"127.0.0.1:{upstream.port}" for h in FAKE_HOSTS} if upstream else {}
        extra = {
            k: kw.pop(k)
            for k in ("valkey", "valkey_prefix", "agent_keys", "engine", "env", "masters", "spill")
            if k in kw
        }
        cfg = kw.pop("config", None) or proxy_config(proxy_ca, upstream_pki, resolve, **kw)
        node = ProxyNode(snapshot_from_config(cfg, SECRET), events or Events(), node_id=node_id, **extra)
        await node.start("127.0.0.1", 0)
        nodes.append(node)
        return node

    yield make
    for n in nodes:
        await n.close()


def client_context(*cafiles: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    for f in cafiles:
        ctx.load_verify_locations(cafile=str(f))
    return ctx


def basic(login: str, password: str) -> dict[str, str]:
    """A Proxy-Authorization header."""
    token = base64.b64encode(f"{login}:{password}".encode()).decode()
    return {"Proxy-Authorization": f"Basic {token}"}


async def tunnel(
    node: ProxyNode, target: str, headers: dict[str, str] | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int, bytes]:
    """CONNECT through the proxy; returns the streams, the status and the head."""
    reader, writer = await asyncio.open_connection(node.host, node.port)
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return reader, writer, status, head


async def tls_through(
    node: ProxyNode, host: str, ctx: ssl.SSLContext, headers: dict[str, str] | None = None, port: int = 443
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer, status, head = await tunnel(node, f"{host}:{port}", headers)
    assert status == 200, head
    await writer.start_tls(ctx, server_hostname=host)
    return reader, writer


def issuer_cn(writer: asyncio.StreamWriter) -> str:
    from cryptography import x509

    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    cert = x509.load_der_x509_certificate(der)
    return str(cert.issuer.rfc4514_string())


async def http_get(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, path: str
) -> tuple[int, bytes]:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.fixture
async def publisher(nats_url: str, topology: Topology, tmp_path: Path) -> AsyncIterator[Publisher]:
    nc = await connect(nats_url, name="proxy-events-test")
    await ensure_streams(nc.jetstream(), topology)
    pub = Publisher(nats_url, topology, tmp_path / "outbox.sqlite", name="proxy-test")
    await pub.start()
    yield pub
    await pub.close()
    await delete_streams(nc.jetstream(), topology)
    await nc.close()


async def hub_bumps(
    client: Any, proxy_ca: tuple[Path, Path], upstream_pki: Pki, resolve: dict[str, str]
) -> None:
    """The Hub's proxy settings (``client``: an admin of tests.hub.conftest)
    bump api.openai.com and api.anthropic.com: a node that follows the
    Hub's snapshots (as it must, to report to the Hub) takes its
    interception from them, and the demo config bumps nothing."""
    section = (await client.get("/api/admin/settings/proxy")).json
    wanted = {
        **section,
        "tls": {
            **section["tls"],
            "cas": [{"cert_file": str(proxy_ca[0]), "key_file": str(proxy_ca[1])}],
            "upstream_ca_files": [str(upstream_pki.ca_path)],
        },
        "resolve": resolve,
        "interception": [
            {"host": "api.openai.com", "adapter": "openai"},
            {"host": "api.anthropic.com", "adapter": "anthropic"},
        ],
    }
    put = await client.put("/api/admin/settings/proxy", wanted)
    assert put.status == 200, put
