"""A gateway with the exact cache (real Valkey) and coalescing on, in front
of a real simulated provider that counts what reaches it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
import valkey.asyncio as avalkey

from ingress.gateway import GatewayServer, create_app, start_gateway
from nexus.sim import SimServer, SimSettings, start_sim
from streams.config_validation import parse_config
from streams.keys import hash_key, new_key
from tests.gateway.conftest import EventRecorder
from tests.inprocess import in_process_snapshot

SECRET = b"test-secret-0123456789abcdef"


@dataclass
class CacheStack:
    gateway: GatewayServer
    sim: SimServer
    events: EventRecorder
    valkey: Any
    prefix: str
    key: str
    other_key: str  # same org and project, another key: another cache scope

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def base(self) -> str:
        return self.gateway.url.removesuffix("/v1")

    @property
    def upstream_calls(self) -> int:
        return int(self.sim.state.recorder.count)


def config(sim: SimServer, key: str, other: str, **cache: Any) -> bytes:
    p = {"name": "sim", "base_url": sim.url, "allow_private_network": True, "api_key_env": "SIM_KEY"}
    slow = {**p, "name": "sim-slow", "headers": {"x-sim-delay-ms": "1500"}}
    trickle = {**p, "name": "sim-trickle", "headers": {"x-sim-tokens-per-s": "40"}}
    dropping = {**p, "name": "sim-drop", "headers": {"x-sim-delay-ms": "1500", "x-sim-drop-after": "2"}}
    tenant = {"org": "acme", "project": "web"}
    doc = {
        "orgs": [{"id": "acme"}],
        "projects": [{"id": "web", "org": "acme"}],
        "virtual_keys": [
            {"id": "k-1", "hash": hash_key(key, SECRET), **tenant},
            {"id": "k-2", "hash": hash_key(other, SECRET), **tenant},
        ],
        "providers": [p, slow, dropping, trickle],
        "models": [
            {
                "name": "gpt-sim",
                "provider": "sim",
                "provider_model": "sim-v1",
                "price": {"input": 2.0, "output": 8.0},
            },
            {"name": "drop-sim", "provider": "sim-drop", "provider_model": "drop-v1"},
            {"name": "trickle-sim", "provider": "sim-trickle", "provider_model": "trickle-v1"},
            {
                "name": "slow-sim",
                "provider": "sim-slow",
                "provider_model": "slow-v1",
                "price": {"input": 2.0, "output": 8.0},
            },
        ],
        "cache": {"enabled": True, "coalesce": True, "ttl_s": 120, **cache},
    }
    return msgspec.yaml.encode(doc)


async def make_stack(valkey_url: str, prefix: str, valkey_client: Any = None, **cache: Any) -> CacheStack:
    sim = await start_sim(SimSettings(record_limit=1000))
    key, other = new_key(), new_key()
    snapshot = in_process_snapshot(parse_config(config(sim, key, other, **cache)), SECRET)
    client = valkey_client or avalkey.from_url(valkey_url)  # type: ignore[no-untyped-call]
    events = EventRecorder()
    app = create_app(snapshot, events, env={"SIM_KEY": "sk"}, valkey=client, valkey_prefix=prefix)
    gateway = await start_gateway(app)
    return CacheStack(gateway, sim, events, client, prefix, key, other)


async def close_stack(s: CacheStack) -> None:
    await s.gateway.close()
    await s.sim.close()
    await s.valkey.aclose()


@pytest.fixture
async def cached(valkey_url: str, valkey_prefix: str) -> AsyncIterator[CacheStack]:
    s = await make_stack(valkey_url, valkey_prefix)
    yield s
    await close_stack(s)
