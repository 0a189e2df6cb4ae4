"""The packaged embedding model, loaded once per session, and semantic
caches on the real Valkey."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import valkey.asyncio as avalkey

from ingress.cache.semantic import Embedder, SemanticCache
from ingress.pipeline.stages.semantic import load_embedder


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    # The gateway's own loader: the apps the end-to-end tests start reuse it.
    return load_embedder()


@pytest.fixture
async def valkey_client(valkey_url: str) -> AsyncIterator[Any]:
    client = avalkey.from_url(valkey_url)  # type: ignore[no-untyped-call]
    yield client
    await client.aclose()


def make_cache(client: Any, prefix: str, embedder: Embedder, **kw: Any) -> SemanticCache:
    kw.setdefault("threshold", 0.93)
    kw.setdefault("ttl_s", 300)
    # a loaded 2-core machine: these tests are about answers, not latency
    kw.setdefault("embed_timeout_s", 5.0)
    kw.setdefault("timeout_s", 2.0)
    return SemanticCache(client, prefix, embedder, **kw)


ADMIN = "admin-token-for-tests"


async def make_semantic_stack(
    valkey_url: str, prefix: str, cache: dict[str, Any] | None = None, **semantic: Any
) -> Any:
    """The exact-cache stack of tests/cache with the semantic cache on and
    an admin token; ``.second`` is another gateway node on the same Valkey."""
    import msgspec

    from ingress.gateway import create_app, start_gateway
    from nexus.sim import SimSettings, start_sim
    from streams.config_validation import parse_config
    from streams.keys import new_key
    from tests.cache.conftest import SECRET, CacheStack, config
    from tests.gateway.conftest import EventRecorder
    from tests.inprocess import in_process_snapshot

    sim = await start_sim(SimSettings(record_limit=1000))
    key, other = new_key(), new_key()
    # a generous embed timeout: these tests are about answers, on a shared 2-core machine
    semantic = {"enabled": True, "embed_timeout_ms": 5000, **semantic}
    cache = {"lookup_timeout_ms": 2000, **(cache or {})}
    doc = msgspec.yaml.decode(config(sim, key, other, semantic=semantic, **cache))
    snapshot = in_process_snapshot(parse_config(msgspec.yaml.encode(doc)), SECRET)
    env = {"SIM_KEY": "sk", "NEXUS_ADMIN_TOKEN": ADMIN}
    nodes = []
    for _ in range(2):
        client = avalkey.from_url(valkey_url)  # type: ignore[no-untyped-call]
        events = EventRecorder()
        app = create_app(snapshot, events, env=env, valkey=client, valkey_prefix=prefix)
        nodes.append(CacheStack(await start_gateway(app), sim, events, client, prefix, key, other))
    first, second = nodes
    first.second = second  # type: ignore[attr-defined]
    return first


async def close_semantic_stack(s: Any) -> None:
    import asyncio

    async def close() -> None:
        for node in (s.second, s):
            await node.gateway.close()
            await node.valkey.aclose()
        await s.sim.close()

    try:
        await asyncio.wait_for(close(), 60)
    except TimeoutError:
        for task in asyncio.all_tasks():  # what a stuck shutdown waits on
            task.print_stack()
        raise
