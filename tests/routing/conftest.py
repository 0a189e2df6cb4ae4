"""A gateway in front of three real simulated providers with routing rules
over them: ``primary`` (failure modes injected per provider with x-sim-*
headers), ``backup`` (always healthy) and ``switch`` (a sim whose settings a
test flips to make a target fail, then recover)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from ingress.gateway import GatewayServer, create_app, start_gateway
from nexus.sim import SimServer, SimSettings, start_sim
from streams.config_validation import parse_config
from streams.keys import hash_key, new_key
from tests.gateway.conftest import EventRecorder, free_port
from tests.inprocess import in_process_snapshot

SECRET = b"test-secret-0123456789abcdef"
ADMIN = "admin-token-for-routing-tests"


def count_by_model(sim: SimServer) -> Counter[str]:
    return Counter(r.body.get("model") for r in sim.state.recorder.snapshot()["requests"])


@dataclass
class RoutedStack:
    gateway: GatewayServer
    primary: SimServer
    backup: SimServer
    switch: SimServer
    events: EventRecorder
    key: str
    narrow_key: str  # may call "flaky" only

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def base(self) -> str:
        return self.gateway.url.removesuffix("/v1")


def _provider(name: str, sim: SimServer, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "base_url": sim.url,
        "allow_private_network": True,
        "api_key_env": "SIM_KEY",
        **extra,
    }


def single(model: str) -> dict[str, Any]:
    return {"type": "single", "model": model}


def fallback(*models: str, on: tuple[str, ...] | None = None) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "fallback", "targets": [single(m) for m in models]}
    if on is not None:
        node["on_failure"] = list(on)
    return node


def config(primary: SimServer, backup: SimServer, switch: SimServer, key: str, narrow: str) -> bytes:
    fail0 = {"x-sim-retry-after": "0"}
    priced = {"input": 1.0, "output": 2.0}
    models = [
        ("flaky", "p503"),
        ("limited", "p429"),
        ("dropper", "pdrop"),
        ("sleepy", "phang"),
        ("gone", "dead"),
        ("backup", "back"),
        ("switchy", "psw"),
    ]
    doc = {
        "orgs": [{"id": "acme"}],
        "projects": [{"id": "web", "org": "acme"}],
        "virtual_keys": [
            {"id": "k-full", "hash": hash_key(key, SECRET), "org": "acme", "project": "web", "user": "alice"},
            {
                "id": "k-narrow",
                "hash": hash_key(narrow, SECRET),
                "org": "acme",
                "project": "web",
                "allowed_models": ["flaky"],
            },
        ],
        "providers": [
            _provider("p503", primary, headers={"x-sim-fail-status": "503", **fail0}),
            _provider("p429", primary, headers={"x-sim-fail-status": "429", "x-sim-retry-after": "30"}),
            _provider("pdrop", primary, headers={"x-sim-drop-after": "2"}),
            _provider("phang", primary, read_timeout_s=0.3, headers={"x-sim-hang": "1"}),
            {"name": "dead", "base_url": f"http://127.0.0.1:{free_port()}/v1", "allow_private_network": True},
            _provider("back", backup),
            _provider("psw", switch),
        ],
        "models": [
            *({"name": n, "provider": p, "provider_model": f"{n}-v1", "price": priced} for n, p in models),
            {"name": "embed-flaky", "provider": "p503", "provider_model": "sim-embed", "kind": "embedding"},
            {"name": "embed-backup", "provider": "back", "provider_model": "sim-embed", "kind": "embedding"},
        ],
        "routing": {
            "breaker": {"failures": 3, "window_s": 30, "open_s": 2.0},  # 3 requests fit in it when loaded
            "retry": {"max_attempts": 1, "backoff_ms": 1, "max_backoff_ms": 20},
            "rules": [
                {"name": "on-503", "match": ["fb-503"], "strategy": fallback("flaky", "backup")},
                {"name": "on-429", "match": ["fb-429"], "strategy": fallback("limited", "backup")},
                {"name": "on-timeout", "match": ["fb-timeout"], "strategy": fallback("sleepy", "backup")},
                {"name": "on-dead", "match": ["fb-dead"], "strategy": fallback("gone", "backup")},
                {"name": "on-drop", "match": ["fb-drop"], "strategy": fallback("dropper", "backup")},
                {
                    "name": "5xx-only",
                    "match": ["fb-5xx-only"],
                    "strategy": fallback("limited", "backup", on=("5xx",)),
                },
                {
                    "name": "retrying",
                    "match": ["retrying"],
                    "strategy": single("flaky"),
                    "retry": {"max_attempts": 3, "backoff_ms": 5, "max_backoff_ms": 20},
                },
                {
                    "name": "capped",
                    "match": ["capped"],
                    "strategy": fallback("flaky", "gone", "backup"),
                    "retry": {
                        "max_attempts": 3,
                        "max_total_attempts": 4,
                        "backoff_ms": 1,
                        "max_backoff_ms": 5,
                    },
                },
                {
                    "name": "embed",
                    "match": ["embed-auto"],
                    # a chat model in the chain is skipped for embeddings
                    "strategy": fallback("embed-flaky", "backup", "embed-backup"),
                },
                {"name": "breaker", "match": ["fb-switch"], "strategy": fallback("switchy", "backup")},
                {
                    "name": "tiered",
                    "match": ["tiered"],
                    "strategy": {
                        "type": "conditional",
                        "conditions": [{"when": {"headers.x-tier": "gold"}, "then": single("backup")}],
                        "default": single("switchy"),
                    },
                },
            ],
        },
    }
    return msgspec.yaml.encode(doc)


@pytest.fixture
async def routed(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RoutedStack]:
    primary = await start_sim(SimSettings(record_limit=1000))
    backup = await start_sim(SimSettings(record_limit=1000))
    switch = await start_sim(SimSettings(record_limit=1000))
    key, narrow = new_key(), new_key()
    snapshot = in_process_snapshot(parse_config(config(primary, backup, switch, key, narrow)), SECRET)
    events = EventRecorder()
    env = {"SIM_KEY": "sk-sim", "NEXUS_ADMIN_TOKEN": ADMIN}
    gateway = await start_gateway(create_app(snapshot, events, env=env))
    yield RoutedStack(gateway, primary, backup, switch, events, key, narrow)
    await gateway.close()
    for sim in (primary, backup, switch):
        await sim.close()
