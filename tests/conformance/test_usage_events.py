"""Usage from every chat provider, unary and streamed, including cached and
reasoning tokens where the provider reports them, lands in the
UsageRecorded events on real JetStream and in ``traffic_event`` in real
Postgres (through the projector), equal to what the provider reported in
its own wire format and the caller saw."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from adapters.base import Capability
from nexus.wiring import start_projector
from streams.publisher import Publisher
from streams.topology import Topology
from tests.conformance.stack import PROVIDERS, Stack, capabilities, chat_model, start_stack

pytestmark = pytest.mark.integration

CACHED, REASONING = 6, 4
# Providers whose wire usage has no cache-read field at all.
NO_CACHE_FIELD = {"replicate"}
# Providers that count thinking inside output tokens, never apart.
NO_REASONING_FIELD = {"anthropic", "bedrock", "cohere", "replicate", "vertex-claude"}
CHAT = [p for p, (chat, _, _) in PROVIDERS.items() if chat]


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


async def test_usage_from_every_provider_lands_in_events_and_traffic_event(wired: tuple[Stack, Any]) -> None:
    stack, dsn = wired
    seen: dict[str, tuple[str, bool, dict[str, Any]]] = {}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {stack.key}"}) as http:
        for provider in CHAT:
            modes = [False, True] if Capability.STREAM in capabilities(provider) else [False]
            for stream in modes:
                rid, usage = await _call(http, stack, provider, stream)
                seen[rid] = (provider, stream, usage)

    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + 10
        while True:
            rows = {
                r["request_id"]: r
                for r in await conn.fetch(
                    "SELECT request_id, provider, prompt_tokens, completion_tokens, total_tokens, "
                    "cached_tokens, reasoning_tokens, cost_usd, status FROM traffic_event "
                    "WHERE status IS NOT NULL"
                )
            }
            if all(rid in rows for rid in seen) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
    finally:
        await conn.close()

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
