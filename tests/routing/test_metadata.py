"""Conditions over ``metadata.<name>``: labels of the caller's org, project
and key (the nearer one wins), routed through the gateway to a real sim."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import openai
import pytest

from ingress.gateway import GatewayServer, create_app, start_gateway
from nexus.sim import SimServer, SimSettings, start_sim
from streams.config_validation import parse_config
from streams.keys import hash_key, new_key
from tests.gateway.conftest import EventRecorder
from tests.inprocess import in_process_snapshot
from tests.routing.conftest import ADMIN, SECRET

KEYS = {name: new_key() for name in ("plain", "gold", "big")}


def config(sim: SimServer) -> bytes:
    def vk(kid: str, project: str, **extra: Any) -> dict[str, Any]:
        return {"id": kid, "hash": hash_key(KEYS[kid], SECRET), "org": "acme", "project": project, **extra}

    doc = {
        "orgs": [{"id": "acme", "metadata": {"tier": "free", "seats": 3}}],
        "projects": [
            {"id": "web", "org": "acme"},
            {"id": "enterprise", "org": "acme", "metadata": {"seats": 500}},
        ],
        "virtual_keys": [
            vk("plain", "web"),
            vk("gold", "web", metadata={"tier": "gold"}),
            vk("big", "enterprise"),
        ],
        "providers": [{"name": "sim", "base_url": sim.url, "allow_private_network": True}],
        "models": [
            {"name": n, "provider": "sim", "provider_model": f"{n}-v1"} for n in ("premium", "bulk", "basic")
        ],
        "routing": {
            "rules": [
                {
                    "name": "by-labels",
                    "match": ["labelled"],
                    "strategy": {
                        "type": "conditional",
                        "conditions": [
                            {
                                "when": {"metadata.tier": "gold"},
                                "then": {"type": "single", "model": "premium"},
                            },
                            {
                                "when": {"metadata.seats": {"$gte": 100}},
                                "then": {"type": "single", "model": "bulk"},
                            },
                        ],
                        "default": {"type": "single", "model": "basic"},
                    },
                }
            ]
        },
    }
    return msgspec.yaml.encode(doc)


@pytest.fixture
async def gateway() -> AsyncIterator[GatewayServer]:
    sim = await start_sim(SimSettings())
    snapshot = in_process_snapshot(parse_config(config(sim)), SECRET)
    gw = await start_gateway(create_app(snapshot, EventRecorder(), env={"NEXUS_ADMIN_TOKEN": ADMIN}))
    yield gw
    await gw.close()
    await sim.close()


@pytest.mark.parametrize(
    ("key", "routed"),
    [
        pytest.param("plain", "basic-v1", id="org-labels"),
        pytest.param("gold", "premium-v1", id="key-overrides-org"),
        pytest.param("big", "bulk-v1", id="project-overrides-org"),
    ],
)
async def test_conditions_read_org_project_and_key_labels(
    gateway: GatewayServer, key: str, routed: str
) -> None:
    async with openai.AsyncOpenAI(base_url=gateway.url, api_key=KEYS[key], max_retries=0) as c:
        raw = await c.chat.completions.with_raw_response.create(
            model="labelled", messages=[{"role": "user", "content": "hi"}]
        )
    assert raw.headers["x-nexus-routed-model"] == routed
    async with httpx.AsyncClient() as h:
        shown = await h.post(
            gateway.url.removesuffix("/v1") + "/internal/routing/explain",
            json={"model": "labelled", "key_id": key},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
    assert shown.json()["target"] == routed.removesuffix("-v1")
