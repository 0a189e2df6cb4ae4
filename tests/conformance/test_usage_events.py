"""Usage from every chat provider, unary and streamed, including cached and
reasoning tokens where the provider reports them, lands in the
UsageRecorded events on real JetStream and in ``traffic_event`` in real
Postgres (through the projector), equal to what the provider reported in
its own wire format and the caller saw.  Every embeddings provider's usage
(Voyage serves nothing else) lands there too."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from adapters.base import Capability
from nexus.wiring import start_projector
from streams.publisher import Publisher
from streams.topology import Topology
from tests.conformance.stack import PROVIDERS, Stack, capabilities, chat_model, embed_model, start_stack

pytestmark = pytest.mark.integration

CACHED, REASONING = 6, 4
# Providers whose wire usage has no cache-read field at all.
NO_CACHE_FIELD = {"replicate"}
# Providers that count thinking inside output tokens, never apart.
NO_REASONING_FIELD = {"anthropic", "bedrock", "cohere", "replicate", "vertex-claude"}
CHAT = [p for p, (chat, _, _) in PROVIDERS.items() if chat]
# Providers whose embeddings answers carry no token counts in the body
# (Cohere on Bedrock reports them only in a response header).
NO_EMBED_USAGE = {"gemini", "vertex", "bedrock"}
EMBED = [p for p, (_, embed, _) in PROVIDERS.items() if embed and Capability.EMBEDDINGS in capabilities(p)]


@pytest.fixture
async def wired(
    nats_url: str, pg_dsn: str, topology: Topology, tmp_path: Path
) -> AsyncIterator[tuple[Stack, Any]]:
    publisher = Publisher(
        nats_url, topology, tmp_path / "outbox.sqlite", ack_timeout_s=1.0, retry_backoff_s=0.1
    )
    await publisher.start()
    stack = await start_stack(sink=publisher)
    ep = {"nats_url": nats_url, "postgres_dsn": pg_dsn, "duckdb_path": str(tmp_path / "analytics.duckdb")}
    _projector, stop = await start_projector(ep, topology)
    yield stack, pg_dsn
    await stop()
    await stack.close()
    await publisher.close()


async def _call(
    http: aiohttp.ClientSession, stack: Stack, provider: str, stream: bool
) -> tuple[str, dict[str, Any]]:
    body: dict[str, Any] = {
        "model": chat_model(provider),
        "messages": [
            {"role": "user", "content": f"sim:cached={CACHED} sim:reasoning={REASONING} count these"}
        ],
        "max_tokens": 100,
    }
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    async with http.post(stack.url + "/chat/completions", json=body) as r:
        assert r.status == 200, await r.text()
        rid = r.headers["x-nexus-request-id"]
        if not stream:
            return rid, (await r.json())["usage"]
        usage: dict[str, Any] = {}
        async for line in r.content:
            if line.startswith(b"data: {") and b'"usage"' in line:
                usage = json.loads(line[6:])["usage"] or usage
        return rid, usage


async def _rows(dsn: str, rids: Iterable[str]) -> dict[str, Any]:
    """The projected traffic_event rows of these requests (waiting for them)."""
    want = set(rids)
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + 10
        while True:
            rows = {
                r["request_id"]: r
                for r in await conn.fetch(
                    "SELECT request_id, provider, prompt_tokens, completion_tokens, total_tokens, "
                    "cached_tokens, reasoning_tokens, cost_usd, usage_estimated, status FROM traffic_event "
                    "WHERE status IS NOT NULL"
                )
            }
            if want <= rows.keys() or time.monotonic() > deadline:
                return rows
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def test_usage_from_every_provider_lands_in_events_and_traffic_event(wired: tuple[Stack, Any]) -> None:
    stack, dsn = wired
    seen: dict[str, tuple[str, bool, dict[str, Any]]] = {}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {stack.key}"}) as http:
        for provider in CHAT:
            modes = [False, True] if Capability.STREAM in capabilities(provider) else [False]
            for stream in modes:
                rid, usage = await _call(http, stack, provider, stream)
                seen[rid] = (provider, stream, usage)

    rows = await _rows(dsn, seen)

    problems = []
    for rid, (provider, stream, usage) in seen.items():
        row = rows.get(rid)
        where = f"{provider} {'stream' if stream else 'unary'}"
        if row is None:
            problems.append(f"{where}: no traffic_event row")
            continue
        want_cached = 0 if provider in NO_CACHE_FIELD else CACHED
        want_reasoning = 0 if provider in NO_REASONING_FIELD else REASONING
        got = (row["provider"], row["cached_tokens"], row["reasoning_tokens"])
        if got != (provider, want_cached, want_reasoning):
            problems.append(
                f"{where}: (provider, cached, reasoning) {got} != {(provider, want_cached, want_reasoning)}"
            )
        if provider == "replicate" and stream:
            # Replicate's stream carries no token counts: the row is an
            # estimate, and the caller was shown none.
            continue
        caller = (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"])
        if (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) != caller:
            problems.append(f"{where}: row tokens differ from the caller's {caller}")
        details = usage.get("prompt_tokens_details") or {}
        if details.get("cached_tokens", 0) != want_cached:
            problems.append(f"{where}: caller saw cached {details.get('cached_tokens')}")
        expected_cost = (
            (row["prompt_tokens"] - want_cached) * 1.0 + want_cached * 0.5 + row["completion_tokens"] * 2.0
        ) / 1e6
        if row["cost_usd"] != pytest.approx(expected_cost):
            problems.append(f"{where}: cost {row['cost_usd']} != {expected_cost}")
    assert not problems, "\n".join(problems)
    assert len(seen) == len(rows.keys() & seen.keys()) >= 2 * len(CHAT) - 1


async def test_embeddings_usage_from_every_provider_lands_in_traffic_event(wired: tuple[Stack, Any]) -> None:
    stack, dsn = wired
    seen: dict[str, tuple[str, dict[str, Any]]] = {}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {stack.key}"}) as http:
        for provider in EMBED:
            body = {"model": embed_model(provider), "input": ["hello world", "nexus gateway embeddings"]}
            async with http.post(stack.url + "/embeddings", json=body) as r:
                assert r.status == 200, await r.text()
                seen[r.headers["x-nexus-request-id"]] = (provider, (await r.json())["usage"])
    assert "voyage" in {p for p, _ in seen.values()}

    rows = await _rows(dsn, seen)
    problems = []
    for rid, (provider, usage) in seen.items():
        row = rows.get(rid)
        if row is None:
            problems.append(f"{provider}: no traffic_event row")
            continue
        if usage["prompt_tokens"] == 0:
            # The provider reports no embedding usage: the caller is shown
            # none, the row holds a flagged estimate.
            if provider not in NO_EMBED_USAGE or not (row["usage_estimated"] and row["prompt_tokens"] > 0):
                problems.append(f"{provider}: caller saw no usage; row {dict(row)}")
        else:
            got = (row["provider"], row["prompt_tokens"], row["total_tokens"], row["usage_estimated"])
            want = (provider, usage["prompt_tokens"], usage["total_tokens"], False)
            if got != want:
                problems.append(f"{provider}: (provider, prompt, total, estimated) {got} != {want}")
        if row["cached_tokens"] != 0:
            problems.append(f"{provider}: cached {row['cached_tokens']}")
        if (row["completion_tokens"], row["reasoning_tokens"]) != (0, 0):
            problems.append(
                f"{provider}: completion/reasoning {row['completion_tokens']}/{row['reasoning_tokens']}"
            )
    assert not problems, "\n".join(problems)
