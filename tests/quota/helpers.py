"""Shared pieces of the quota tests: a config, usage events, a Valkey client."""

from __future__ import annotations

import random
from typing import Any

from ingress.quota.pricing import price_usage
from streams.config import NexusConfig
from streams.config_validation import parse_config
from streams.events import Node, Tenant, Usage, UsageRecorded
from streams.quota_counters import NANO, usd_to_nano

BASE = (
    """
orgs:
  - {id: acme, timezone: America/New_York}
  - {id: acme-eu, parent: acme, timezone: Europe/Berlin}
  - {id: other}
projects:
  - {id: web, org: acme}
  - {id: eu-app, org: acme-eu}
  - {id: misc, org: other}
virtual_keys:
  - {id: k1, hash: "HASH_A", org: acme, project: web, user: alice}
  - {id: k2, hash: "HASH_B", org: acme-eu, project: eu-app}
  - {id: k3, hash: "HASH_C", org: other, project: misc}
providers:
  - {name: sim, kind: openai, base_url: "http://127.0.0.1:9", allow_private_network: true}
models:
  - name: big
    provider: sim
    price: {input: 2.0, output: 8.0}
    max_output_tokens: 1000
  - name: small
    provider: sim
    price: {input: 0.1, output: 0.4}
  - name: free-ish
    provider: sim
""".replace("HASH_A", "a" * 64)
    .replace("HASH_B", "b" * 64)
    .replace("HASH_C", "c" * 64)
)


def config(quotas: str) -> NexusConfig:
    return parse_config(BASE + quotas)


PRICES = {"big": (2.0, 8.0), "small": (0.1, 0.4)}


def usage_event(
    *,
    request_id: str,
    key: str = "k1",
    org: str = "acme",
    project: str = "web",
    user: str = "alice",
    model: str = "big",
    prompt: int = 50,
    completion: int = 100,
    at_ms: int | None = None,
    cfg: NexusConfig | None = None,
) -> UsageRecorded:
    usage = Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
    price = None
    if cfg is not None:
        price = next((m.price for m in cfg.models if m.name == model), None)
    kw: dict[str, Any] = {}
    if at_ms is not None:
        kw["occurred_at_ms"] = at_ms
    return UsageRecorded(
        request_id=request_id,
        node=Node(kind="gateway", id="test"),
        tenant=Tenant(org_id=org, project_id=project, key_id=key, user_id=user),
        provider="sim",
        provider_model=model,
        model=model,
        usage=usage,
        cost_usd=price_usage(price, usage) if price else 0.0,
        priced=price is not None,
        **kw,
    )


def nano(ev: UsageRecorded) -> int:
    return usd_to_nano(ev.cost_usd)


def usd(n: int) -> float:
    return n / NANO


def rng(seed: int) -> random.Random:
    return random.Random(seed)


async def counter_value(client: Any, key: str) -> int:
    v = await client.get(key)
    return int(v) if v else 0


async def publish(js: Any, topology: Any, ev: Any, *, msg_id: str | None = None) -> None:
    from streams import codec

    await js.publish(topology.subject_for(ev), codec.encode(ev), headers={"Nats-Msg-Id": msg_id or ev.id})
