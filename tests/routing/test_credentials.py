"""Credential pools: draws converge to the weights over 10,000 decisions
(seeded, chi-square at p = 1e-6), a benched credential sits out its
cooldown, and against a real simulated provider a credential answered with
401/403/429 moves traffic to the others (the sim records a fingerprint of
the credential each request presented)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import openai
import pytest

from ingress.gateway import GatewayServer, create_app, start_gateway
from ingress.routing.credentials import Credential, CredentialPool
from nexus.sim import SimServer, SimSettings, start_sim
from nexus.sim.recorder import credential_fingerprint
from projections.traffic import fold
from streams.config_base import ConfigError
from streams.config_validation import parse_config
from streams.events import RequestCompleted, UpstreamResult
from streams.keys import hash_key, new_key
from tests.gateway.conftest import EventRecorder
from tests.inprocess import in_process_snapshot
from tests.routing.conftest import SECRET

N = 10_000
CRITICAL = {1: 23.93, 2: 27.63, 3: 30.66}  # chi-square at p = 1e-6


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pool(weights: dict[str, float], clock: Clock, cooldown_s: float = 30.0) -> CredentialPool:
    return CredentialPool("p", [Credential(k, f"sk-{k}", w) for k, w in weights.items()], cooldown_s, clock)


def chi_square(counts: Counter[str], weights: dict[str, float]) -> float:
    total = sum(weights.values())
    return sum((counts[k] - N * w / total) ** 2 / (N * w / total) for k, w in weights.items())


@pytest.mark.parametrize("seed", [11, 2026])
def test_draws_converge_to_the_weights(seed: int) -> None:
    weights = {"a": 6.0, "b": 3.0, "c": 1.0}
    p, rng = pool(weights, Clock()), random.Random(seed)
    counts: Counter[str] = Counter()
    for _ in range(N):
        cred = p.pick(rng.random())
        assert cred is not None
        counts[cred.id] += 1
    assert chi_square(counts, weights) < CRITICAL[2], counts
    worst = max(abs(counts[k] / N - w / 10) for k, w in weights.items())
    assert worst < 0.02, (worst, counts)


def test_a_benched_credential_sits_out_its_cooldown() -> None:
    clock = Clock()
    weights = {"a": 6.0, "b": 3.0, "c": 1.0}
    p, rng = pool(weights, clock), random.Random(5)
    p.cool("a", "rate_limited", retry_after_s=1)  # the pool's 30 s beat a short Retry-After
    counts: Counter[str] = Counter(c.id for _ in range(N) if (c := p.pick(rng.random())) is not None)
    assert counts["a"] == 0
    assert chi_square(counts, {"b": 3.0, "c": 1.0}) < CRITICAL[1], counts
    clock.now += 29.9
    assert all(c is not None and c.id != "a" for c in (p.pick(rng.random()) for _ in range(200)))
    clock.now += 0.2
    back = {c.id for c in (p.pick(rng.random()) for _ in range(200)) if c is not None}
    assert "a" in back
    # a longer Retry-After wins over the pool's cooldown
    p.cool("b", "rate_limited", retry_after_s=120)
    clock.now += 60
    assert not any(c is not None and c.id == "b" for c in (p.pick(rng.random()) for _ in range(500)))


def test_every_credential_benched_still_tries_the_one_back_soonest() -> None:
    clock = Clock()
    p = pool({"a": 1.0, "b": 1.0}, clock)
    p.cool("a", "refused")
    clock.now += 5
    p.cool("b", "refused")
    picked = p.pick(0.99)
    assert picked is not None and picked.id == "a"
    assert not p.has_another(set())
    assert p.pick(0.5, exclude={"a", "b"}) is None


# --- against the simulated provider -----------------------------------------


@dataclass
class PoolStack:
    gateway: GatewayServer
    sim: SimServer
    backup: SimServer
    events: EventRecorder
    key: str

    @property
    def url(self) -> str:
        return self.gateway.url

    def presented(self, sim: SimServer | None = None) -> Counter[str]:
        requests = (sim or self.sim).state.recorder.snapshot()["requests"]
        return Counter(r.credential for r in requests)


BAD = "sk-pool-bad"
GOOD = ("sk-pool-good-1", "sk-pool-good-2")


def config(sim: SimServer, backup: SimServer, key: str) -> bytes:
    doc: dict[str, Any] = {
        "orgs": [{"id": "acme"}],
        "projects": [{"id": "web", "org": "acme"}],
        "virtual_keys": [{"id": "k", "hash": hash_key(key, SECRET), "org": "acme", "project": "web"}],
        "providers": [
            {
                "name": "pooled",
                "base_url": sim.url,
                "allow_private_network": True,
                # The bad credential carries nearly all the weight: without the
                # cooldown it would take nearly every request.
                "credentials": [
                    {"id": "bad", "env": "KEY_BAD", "weight": 1000},
                    {"id": "good-1", "env": "KEY_GOOD_1"},
                    {"id": "good-2", "env": "KEY_GOOD_2"},
                ],
                "credential_cooldown_s": 30,
            },
            {
                "name": "all-bad",
                "base_url": sim.url,
                "allow_private_network": True,
                "credentials": [{"id": "bad", "env": "KEY_BAD"}, {"id": "bad-too", "env": "KEY_BAD_TOO"}],
            },
            {
                "name": "backup",
                "base_url": backup.url,
                "allow_private_network": True,
                "api_key_env": "KEY_GOOD_1",
            },
        ],
        "models": [
            {"name": "pooled", "provider": "pooled", "provider_model": "pooled-v1"},
            {"name": "all-bad", "provider": "all-bad", "provider_model": "all-bad-v1"},
            {"name": "backup", "provider": "backup", "provider_model": "backup-v1"},
        ],
        "routing": {
            "rules": [
                {
                    "name": "pool-then-backup",
                    "match": ["pool-then-backup"],
                    "strategy": {
                        "type": "fallback",
                        "targets": [
                            {"type": "single", "model": "all-bad"},
                            {"type": "single", "model": "backup"},
                        ],
                    },
                }
            ]
        },
    }
    return msgspec.yaml.encode(doc)


async def _stack(status: int) -> PoolStack:
    sim = await start_sim(
        SimSettings(record_limit=1000, credential_status={BAD: status, BAD + "-too": status})
    )
    backup = await start_sim(SimSettings(record_limit=1000))
    key = new_key()
    snapshot = in_process_snapshot(parse_config(config(sim, backup, key)), SECRET)
    events = EventRecorder()
    env = {"KEY_BAD": BAD, "KEY_BAD_TOO": BAD + "-too", "KEY_GOOD_1": GOOD[0], "KEY_GOOD_2": GOOD[1]}
    gateway = await start_gateway(create_app(snapshot, events, env=env))
    return PoolStack(gateway, sim, backup, events, key)


@pytest.fixture(params=[429, 401, 403], ids=["429", "401", "403"])
async def stack(request: pytest.FixtureRequest) -> AsyncIterator[PoolStack]:
    s = await _stack(request.param)
    yield s
    await s.gateway.close()
    await s.sim.close()
    await s.backup.close()


async def test_a_refused_credential_moves_traffic_to_the_others(stack: PoolStack) -> None:
    ids: list[str] = []
    async with openai.AsyncOpenAI(base_url=stack.url, api_key=stack.key, max_retries=0) as c:
        for i in range(20):
            raw = await c.chat.completions.with_raw_response.create(
                model="pooled", messages=[{"role": "user", "content": f"hello {i}"}]
            )
            assert raw.parse().choices[0].message.content
            ids.append(raw.headers["x-nexus-request-id"])
    presented = stack.presented()
    # The heavy credential was tried once, benched, and never again.
    assert presented[credential_fingerprint(BAD)] == 1, presented
    good = presented[credential_fingerprint(GOOD[0])] + presented[credential_fingerprint(GOOD[1])]
    assert good == 20
    # The request that met it: two attempts, each naming its credential.
    first = [e for e in stack.events.of(ids[0]) if isinstance(e, UpstreamResult)]
    assert (first[0].attempt, first[0].credential_id) == (1, "bad")
    assert first[0].status in (401, 403, 429)
    assert first[1].attempt == 2 and first[1].status == 200 and first[1].credential_id in ("good-1", "good-2")
    (done,) = [e for e in stack.events.of(ids[0]) if isinstance(e, RequestCompleted)]
    assert done.attempts == 2
    row = fold(stack.events.of(ids[0]))[ids[0]]
    assert (row["attempts"], row["credential_id"]) == (2, first[1].credential_id)
    async with httpx.AsyncClient() as h:
        metrics = (await h.get(stack.url.removesuffix("/v1") + "/metrics")).text
    assert 'nexus_credential_cooldowns_total{credential="bad",provider="pooled"' in metrics
    assert 'nexus_credential_cooling{credential="bad",provider="pooled"} 1.0' in metrics


async def test_a_pool_with_every_credential_refused_falls_back(stack: PoolStack) -> None:
    async with openai.AsyncOpenAI(base_url=stack.url, api_key=stack.key, max_retries=0) as c:
        raw = await c.chat.completions.with_raw_response.create(
            model="pool-then-backup", messages=[{"role": "user", "content": "hello"}]
        )
    assert raw.headers["x-nexus-routed-model"] == "backup-v1"
    rid = raw.headers["x-nexus-request-id"]
    attempts = [
        (e.attempt, e.provider, e.credential_id)
        for e in stack.events.of(rid)
        if isinstance(e, UpstreamResult)
    ]
    assert [a[:2] for a in attempts[:2]] == [(1, "all-bad"), (2, "all-bad")]
    assert {a[2] for a in attempts[:2]} == {"bad", "bad-too"}
    assert attempts[2] == (3, "backup", "")
    assert stack.presented() == Counter(
        {credential_fingerprint(BAD): 1, credential_fingerprint(BAD + "-too"): 1}
    )


async def test_requests_spread_over_the_pool_by_weight() -> None:
    """200 requests over a 3:1 pool through the gateway: the heavy
    credential's share is within five standard deviations of 150."""
    sim = await start_sim(SimSettings(record_limit=1000))
    key = new_key()
    doc = {
        "orgs": [{"id": "acme"}],
        "projects": [{"id": "web", "org": "acme"}],
        "virtual_keys": [{"id": "k", "hash": hash_key(key, SECRET), "org": "acme", "project": "web"}],
        "providers": [
            {
                "name": "pooled",
                "base_url": sim.url,
                "allow_private_network": True,
                "credentials": [{"id": "heavy", "env": "A", "weight": 3}, {"id": "light", "env": "B"}],
            }
        ],
        "models": [{"name": "m", "provider": "pooled"}],
    }
    snapshot = in_process_snapshot(parse_config(msgspec.yaml.encode(doc)), SECRET)
    gateway = await start_gateway(
        create_app(snapshot, EventRecorder(), env={"A": "sk-heavy", "B": "sk-light"})
    )
    try:
        async with openai.AsyncOpenAI(base_url=gateway.url, api_key=key, max_retries=0) as c:
            for i in range(200):
                await c.chat.completions.create(model="m", messages=[{"role": "user", "content": str(i)}])
        requests = sim.state.recorder.snapshot()["requests"]
    finally:
        await gateway.close()
        await sim.close()
    counts = Counter(r.credential for r in requests)
    heavy, light = counts[credential_fingerprint("sk-heavy")], counts[credential_fingerprint("sk-light")]
    assert heavy + light == 200
    assert abs(heavy - 150) <= 5 * (200 * 0.75 * 0.25) ** 0.5, counts


@pytest.mark.parametrize(
    ("provider", "error"),
    [
        pytest.param({"api_key_env": "X", "credentials": [{"id": "a", "env": "A"}]}, "not both", id="both"),
        pytest.param(
            {"credentials": [{"id": "a", "env": "A"}, {"id": "a", "env": "B"}]}, "duplicate", id="dup"
        ),
        pytest.param({"credentials": [{"id": "a", "env": "A", "weight": 0}]}, "weight", id="zero-weight"),
        pytest.param(
            {"credentials": [{"id": "a", "env": "A"}], "credential_cooldown_s": 0},
            "cooldown",
            id="no-cooldown",
        ),
        pytest.param(
            {"credentials": [{"id": "a", "env": "A", "value": "sk"}]}, "unknown field", id="literal"
        ),
    ],
)
def test_pool_config_is_checked(provider: dict[str, Any], error: str) -> None:
    doc = {"providers": [{"name": "p", "base_url": "https://api.example.com/v1", **provider}]}
    with pytest.raises(ConfigError, match=error):
        parse_config(msgspec.json.encode(doc))
