"""The whole quota loop, all real: the gateway in-process in front of the
simulated provider, publishing to JetStream, the QuotaProcessor settling
usage events on Valkey, and the gateway reserving on the same counters."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
import valkey.asyncio as avalkey

from ingress.gateway import GatewayServer, create_app, start_gateway
from nexus.sim import SimServer, SimSettings, start_sim
from processors.quota import QuotaProcessor
from streams.config_snapshot import ConfigSnapshot
from streams.config_validation import parse_config
from streams.keys import hash_key, new_key
from streams.publisher import Publisher
from streams.topology import Topology
from tests.inprocess import in_process_snapshot

SECRET = b"quota-e2e-secret-0123456789abcdef"
SIM_KEY = "sk-sim-quota"
ADMIN_TOKEN = "admin-token-quota-e2e-0123456789"

# USD per million tokens: dear enough that a few hundred small requests
# reach a cap of a dollar.
PRICE = {"input": 100.0, "output": 400.0}
DEAR = {"input": 1000.0, "output": 4000.0}
CAP_USD = 1.0
SOFT_USD = 0.05
KEY_IDS = ("k-cap", "k-soft", "k-rpm", "k-free", "k-down", "k-tok", "k-fo")


@dataclass
class QuotaStack:
    gateway: GatewayServer
    sim: SimServer
    proc: QuotaProcessor
    publisher: Publisher
    valkey: Any
    snapshot: ConfigSnapshot
    keys: dict[str, str]  # key id -> the full virtual key
    topology: Topology
    prefix: str
    config_path: Path

    @property
    def url(self) -> str:
        return self.gateway.url


def config_dict(sim_port: int, keys: dict[str, str]) -> dict[str, Any]:
    sim = f"http://127.0.0.1:{sim_port}/v1"

    def provider(name: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "base_url": sim,
            "allow_private_network": True,
            "api_key_env": "SIM_QUOTA_KEY",
            **extra,
        }

    return {
        "version": 1,
        # Bursts of 500 from clients on the gateway's own loop: no in-flight
        # cap in the way of the quota's answers (the loop-lag gate is off in
        # every in-process stack: tests/inprocess.py).
        "gateway": {"request_timeout_s": 120, "max_inflight": 1024, "node_id": "gw-quota"},
        "orgs": [{"id": "acme", "timezone": "America/New_York"}],
        "projects": [{"id": "web", "org": "acme"}],
        "virtual_keys": [
            {"id": kid, "hash": hash_key(full, SECRET), "org": "acme", "project": "web", "user": "alice"}
            for kid, full in keys.items()
        ],
        "providers": [
            provider("sim"),
            provider("sim-503", headers={"x-sim-fail-status": "503"}),
            {
                **provider("sim-anth"),
                "kind": "anthropic",
                "base_url": f"http://127.0.0.1:{sim_port}/anthropic",
            },
        ],
        "models": [
            {"name": "gpt-q", "provider": "sim", "provider_model": "sim-small", "price": PRICE},
            {"name": "gpt-q-big", "provider": "sim", "provider_model": "sim-large", "price": PRICE},
            {
                "name": "gpt-cheap",
                "provider": "sim",
                "provider_model": "sim-small",
                "price": {"input": 0.1, "output": 0.4},
            },
            {"name": "unpriced", "provider": "sim", "provider_model": "sim-small"},
            {"name": "flaky", "provider": "sim-503", "price": PRICE},
            {"name": "dear", "provider": "sim", "provider_model": "sim-large", "price": DEAR},
            # A translated target with a small output budget of its own.
            {
                "name": "short-claude",
                "provider": "sim-anth",
                "provider_model": "claude-short",
                "price": PRICE,
                "max_output_tokens": 64,
            },
            {
                "name": "embed-q",
                "provider": "sim",
                "provider_model": "sim-embed",
                "kind": "embedding",
                "price": PRICE,
            },
        ],
        # "fb-dear": the flaky target first, then a ten times dearer one.
        "routing": {
            "retry": {"max_attempts": 1},
            "rules": [
                {
                    "name": "to-dear",
                    "match": ["fb-dear"],
                    "strategy": {
                        "type": "fallback",
                        "targets": [{"type": "single", "model": m} for m in ("flaky", "dear")],
                    },
                },
                {
                    "name": "to-claude",
                    "match": ["fb-claude"],
                    "strategy": {
                        "type": "fallback",
                        "targets": [{"type": "single", "model": m} for m in ("flaky", "short-claude")],
                    },
                },
            ],
        },
        "quotas": {
            "reservation_ttl_s": 60,
            "budgets": [
                {"id": "cap", "unit": "usd", "limit": CAP_USD, "window": "day", "match": {"key": "k-cap"}},
                {"id": "fo", "unit": "usd", "limit": 100.0, "window": "day", "match": {"key": "k-fo"}},
                {
                    "id": "soft",
                    "unit": "usd",
                    "limit": SOFT_USD,
                    "window": "day",
                    "match": {"key": "k-soft"},
                    "action": "soft",
                    "alert_at": [0.5],
                },
                {
                    "id": "down",
                    "unit": "usd",
                    "limit": 0.02,
                    "window": "day",
                    "match": {"key": "k-down", "model": "gpt-q-big"},
                    "action": "downgrade",
                    "downgrade_to": "gpt-cheap",
                },
                {
                    "id": "tok",
                    "unit": "tokens",
                    "limit": 3000,
                    "window": "1h",
                    "match": {"key": "k-tok", "model": "gpt-q"},
                },
            ],
            "rate_limits": [{"id": "rpm", "match": {"key": "k-rpm"}, "rpm": 3}],
        },
    }


@pytest.fixture
async def qstack(
    nats_url: str, valkey_url: str, valkey_prefix: str, topology: Topology, tmp_path: Path
) -> AsyncIterator[QuotaStack]:
    sim = await start_sim(SimSettings(api_key=SIM_KEY))
    keys = {kid: new_key() for kid in KEY_IDS}
    cfg_bytes = msgspec.yaml.encode(config_dict(sim.port, keys))
    config_path = tmp_path / "nexus.yaml"
    config_path.write_bytes(cfg_bytes)
    snapshot = in_process_snapshot(parse_config(cfg_bytes), SECRET)
    proc = QuotaProcessor(
        snapshot.config, nats_url=nats_url, valkey_url=valkey_url, topology=topology, key_prefix=valkey_prefix
    )
    await proc.start()
    publisher = Publisher(nats_url, topology, tmp_path / "outbox.sqlite", name="quota-e2e")
    await publisher.start()
    pool = avalkey.BlockingConnectionPool.from_url(valkey_url, max_connections=256, timeout=30)
    client = avalkey.Valkey(connection_pool=pool)
    app = create_app(
        snapshot,
        publisher,
        env={"SIM_QUOTA_KEY": SIM_KEY, "NEXUS_ADMIN_TOKEN": ADMIN_TOKEN},
        valkey=client,
        valkey_prefix=valkey_prefix,
    )
    gateway = await start_gateway(app)
    stack = QuotaStack(
        gateway, sim, proc, publisher, client, snapshot, keys, topology, valkey_prefix, config_path
    )
    try:
        yield stack
    finally:
        await gateway.close()
        await publisher.close()
        await proc.stop()
        await sim.close()
        found = [k async for k in client.scan_iter(match=f"{valkey_prefix}*", count=1000)]
        if found:
            await client.delete(*found)
        await client.aclose()
        await pool.aclose()
