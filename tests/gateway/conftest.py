"""A gateway in-process on a free port, in front of a real simulated provider
(also in-process), with a config that exercises every path: healthy,
failing, dropping and hanging providers; keys that are limited, expired or
revoked."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass

import msgspec
import pytest

from ingress.gateway import GatewayServer, create_app, start_gateway
from ingress.pipeline.runtime import EventSink
from nexus.sim import SimServer, SimSettings, start_sim
from streams.config_snapshot import ConfigSnapshot
from streams.config_validation import parse_config
from streams.events import Event
from streams.keys import hash_key, new_key
from streams.spill import SpillStore
from tests.inprocess import in_process_snapshot

SECRET = b"test-secret-0123456789abcdef"


class EventRecorder:
    """The publisher's interface (sync, non-blocking emit), recording in memory."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def of(self, request_id: str) -> list[Event]:
        return [e for e in self.events if e.request_id == request_id]

    def types(self, request_id: str) -> list[str]:
        return [type(e).__name__ for e in self.of(request_id)]


@dataclass
class Keys:
    full: str
    limited: str  # sim-small only
    expired: str
    revoked: str


def make_keys() -> Keys:
    return Keys(full=new_key(), limited=new_key(), expired=new_key(), revoked=new_key())


def _provider(name: str, base_url: str, **extra: object) -> dict[str, object]:
    return {
        "name": name,
        "base_url": base_url,
        "allow_private_network": True,
        "api_key_env": "SIM_TEST_KEY",
        **extra,
    }


def config_yaml(
    sim_port: int,
    dead_port: int,
    keys: Keys,
    *,
    max_body: int = 64 * 1024,
    max_inflight: int = 64,
    header_timeout_s: float = 10.0,
) -> bytes:
    sim = f"http://127.0.0.1:{sim_port}/v1"
    yesterday = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    key = {"org": "acme", "project": "web"}
    priced = {"input": 1.0, "output": 2.0}
    config = {
        "version": 1,
        "gateway": {
            "max_body_bytes": max_body,
            "max_inflight": max_inflight,
            "request_timeout_s": 5,
            "header_timeout_s": header_timeout_s,
            "node_id": "gw-test",
        },
        "orgs": [{"id": "acme"}],
        "projects": [{"id": "web", "org": "acme"}],
        "virtual_keys": [
            {"id": "k-full", "hash": hash_key(keys.full, SECRET), **key, "user": "alice"},
            {
                "id": "k-limited",
                "hash": hash_key(keys.limited, SECRET),
                **key,
                "allowed_models": ["sim-small"],
            },
            {"id": "k-expired", "hash": hash_key(keys.expired, SECRET), **key, "expires_at": yesterday},
            {"id": "k-revoked", "hash": hash_key(keys.revoked, SECRET), **key, "status": "revoked"},
        ],
        # One sim, many behaviours: each provider sends its failure mode as x-sim-* headers.
        "providers": [
            _provider("sim", sim),
            _provider("sim-503", sim, headers={"x-sim-fail-status": "503"}),
            _provider("sim-429", sim, headers={"x-sim-fail-status": "429", "x-sim-retry-after": "7"}),
            _provider("sim-400", sim, headers={"x-sim-fail-status": "400"}),
            _provider("sim-drop", sim, headers={"x-sim-drop-after": "3"}),
            _provider("sim-errframe", sim, headers={"x-sim-error-after": "2"}),
            _provider("legacy", "https://legacy.example.com/v1", kind="palm"),  # no codec
            _provider("sim-hang", sim, read_timeout_s=0.3, headers={"x-sim-hang": "1"}),
            _provider("sim-short", sim, read_timeout_s=0.3),
            _provider("sim-cached", sim, headers={"x-sim-cached-tokens": "8", "x-sim-reasoning-tokens": "5"}),
            _provider("sim-nousage", sim, headers={"x-sim-omit-usage": "1"}),
            _provider("dead", f"http://127.0.0.1:{dead_port}/v1", connect_timeout_s=1),
        ],
        "models": [
            {
                "name": "sim-small",
                "provider": "sim",
                "provider_model": "sim-small-v1",
                "aliases": ["small"],
                "price": {**priced, "cached_input": 0.5},
            },
            {"name": "sim-large", "provider": "sim", "provider_model": "sim-large-v1"},
            {"name": "flaky", "provider": "sim-503"},
            {"name": "limited", "provider": "sim-429"},
            {"name": "picky", "provider": "sim-400"},
            {"name": "dropper", "provider": "sim-drop", "price": priced},
            {"name": "erring", "provider": "sim-errframe", "price": priced},
            {"name": "claude", "provider": "legacy"},
            {"name": "sleepy", "provider": "sim-hang"},
            {
                "name": "cached",
                "provider": "sim-cached",
                "price": {**priced, "cached_input": 0.5, "reasoning": 4.0},
            },
            {"name": "mute", "provider": "sim-nousage", "price": priced},
            {"name": "gone", "provider": "dead"},
            {"name": "impatient", "provider": "sim-short"},
            {
                "name": "embedder",
                "provider": "sim",
                "provider_model": "sim-embed",
                "kind": "embedding",
                "price": {"input": 0.5},
            },
        ],
    }
    return msgspec.yaml.encode(config)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    gateway: GatewayServer
    sim: SimServer
    events: EventRecorder
    keys: Keys
    snapshot: ConfigSnapshot

    @property
    def url(self) -> str:
        return self.gateway.url


async def make_stack(
    sink: EventSink | None = None,
    spill: SpillStore | None = None,
    *,
    lag_shedding: bool = False,
    header_timeout_s: float = 10.0,
    **config_kw: int,
) -> Stack:
    sim = await start_sim(SimSettings(api_key="sk-sim-test"))
    keys = make_keys()
    yaml = config_yaml(sim.port, free_port(), keys, header_timeout_s=header_timeout_s, **config_kw)
    config = parse_config(yaml)
    snapshot = in_process_snapshot(config, SECRET, lag_shedding=lag_shedding)
    events = EventRecorder()
    app = create_app(snapshot, sink or events, spill=spill, env={"SIM_TEST_KEY": "sk-sim-test"})
    gateway = await start_gateway(app)
    return Stack(gateway=gateway, sim=sim, events=events, keys=keys, snapshot=snapshot)


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    s = await make_stack()
    yield s
    await s.gateway.close()
    await s.sim.close()
