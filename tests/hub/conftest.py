"""Fixtures of the Hub's tests: a real NATS (the CONFIG stream, the snapshot
buckets) under a fresh prefix per test, removed afterwards."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import nats
import pytest
from multidict import CIMultiDict
from nats.aio.client import Client as NATS

from hub.control import ControlPlane
from hub.importer import apply_plan, plan
from hub.service import HubServer, HubSettings
from hub.store import ConfigStore
from ingress.probe import probe
from streams.config import NexusConfig
from streams.config_validation import parse_config
from streams.topology import Topology
from streams.vault.master import new_master_key

DEMO = Path(__file__).resolve().parents[2] / "nexus" / "demo" / "config.yaml"


def demo_config() -> NexusConfig:
    return parse_config(DEMO.read_bytes(), source=str(DEMO))


async def drop_topology(nc: NATS, topology: Topology) -> None:
    js = nc.jetstream()
    names = [s.name for s in topology.streams() + topology.control_streams()]
    names += [
        f"KV_{topology.snapshot_head_bucket}",
        f"KV_{topology.node_report_bucket}",
        f"KV_{topology.fleet_sync_bucket}",
        f"KV_{topology.session_bucket}",
        f"KV_{topology.vault_bucket}",
        f"KV_{topology.agents_bucket}",
        f"KV_{topology.enrolment_bucket}",
        f"KV_{topology.signin_bucket}",
        f"KV_{topology.jobs_bucket}",
        f"OBJ_{topology.snapshot_bucket}",
    ]
    for name in names:
        with contextlib.suppress(Exception):
            await js.delete_stream(name)


@pytest.fixture
async def nc(nats_url: str, topology: Topology) -> AsyncIterator[NATS]:
    conn = await nats.connect(nats_url)
    yield conn
    await drop_topology(conn, topology)
    await conn.close()


@pytest.fixture
async def control(nc: NATS, topology: Topology) -> AsyncIterator[ControlPlane]:
    cp = ControlPlane(ConfigStore(nc.jetstream(), topology))
    await cp.start()
    yield cp
    await cp.stop()


async def import_config(cp: ControlPlane, cfg: NexusConfig) -> int:
    return await apply_plan(cp, plan(cp.state, cfg), actor="system:import")


# --- a running Hub, its admin API and clients ------------------------------------

ADMIN_EMAIL = "admin@example.com"


class Answer:
    def __init__(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        self.status = status
        self.raw = body
        self.headers = headers

    @property
    def json(self) -> Any:
        return msgspec.json.decode(self.raw) if self.raw else None

    @property
    def error(self) -> str:
        return str(self.json["error"]["code"])

    def __repr__(self) -> str:
        return f"<{self.status} {self.raw[:300]!r}>"


class Client:
    """A caller of the admin API (bearer token, or none)."""

    def __init__(self, base: str, token: str = "") -> None:
        self.base = base
        self.token = token
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        await self._session.close()

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        raw: bytes | None = None,
    ) -> Answer:
        h = {"Content-Type": "application/json"}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        h.update(headers or {})
        data = raw if raw is not None else (msgspec.json.encode(body) if body is not None else None)
        async with self._session.request(method, self.base + path, data=data, headers=h) as resp:
            return Answer(resp.status, await resp.read(), CIMultiDict(resp.headers))

    async def get(self, path: str, **kw: Any) -> Answer:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> Answer:
        return await self.call("POST", path, body if body is not None else {}, **kw)

    async def put(self, path: str, body: Any, **kw: Any) -> Answer:
        return await self.call("PUT", path, body, **kw)

    async def patch(self, path: str, body: Any, **kw: Any) -> Answer:
        return await self.call("PATCH", path, body, **kw)

    async def delete(self, path: str, **kw: Any) -> Answer:
        return await self.call("DELETE", path, **kw)


async def sign_in(base: str, email: str, password: str) -> Client:
    anon = Client(base)
    try:
        ans = await anon.post("/api/admin/auth/login", {"email": email, "password": password})
    finally:
        await anon.close()
    assert ans.status == 200, ans
    return Client(base, ans.json["token"])


@dataclass
class RunningHub:
    server: HubServer
    admin_password: str

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def control(self) -> ControlPlane:
        assert self.server.control is not None
        return self.server.control


@pytest.fixture
async def hub(
    nc: NATS, nats_url: str, topology: Topology, pg_dsn: str, tmp_path: Path
) -> AsyncIterator[RunningHub]:
    server = HubServer(
        HubSettings(
            nats_url=nats_url,
            topology=topology,
            data_dir=tmp_path / "hub",
            postgres_dsn=pg_dsn,
            port=0,
            snapshot_debounce_s=0.01,
            # A vault master key of its own (the credential routes work).
            env={**os.environ, "NEXUS_VAULT_MASTER_KEY": new_master_key()},
        ),
        prober=probe,  # the data plane's, as nexus hub run wires it
    )
    await server.start()
    try:
        password = await server.bootstrap_admin(ADMIN_EMAIL)
        assert password is not None
        await server.import_config(demo_config())
        yield RunningHub(server, password)
    finally:
        await server.stop()


@pytest.fixture
async def admin(hub: RunningHub) -> AsyncIterator[Client]:
    client = await sign_in(hub.url, ADMIN_EMAIL, hub.admin_password)
    yield client
    await client.close()
