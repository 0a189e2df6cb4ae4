"""The compliance audit trail end to end: the gateway with the real
publisher, the verdict events of both stages on the real JetStream traffic
stream, the same decisions in ``traffic_event`` (Postgres and DuckDB,
rebuilt identical by replay), and a body over the inline limit spilled to
the object store as its redacted form, resolving to the exact bytes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import nats
import openai
import pytest
from nats.js import JetStreamContext

from nexus.wiring import start_projector
from projections.duckfile import open_duckdb
from projections.projector import Projector
from streams import codec
from streams.events import INLINE_BODY_LIMIT, Event, RequestReceived, UpstreamResult
from streams.events_compliance import HookVerdict, StageDecision
from streams.jetstream import delete_streams, ensure_streams
from streams.publisher import Publisher
from streams.spill import SpillStore
from streams.topology import Topology
from tests.hooks_e2e.conftest import CARD, INJECTION, LEAKY_PROMPT, HooksStack, make_hooks_stack

pytestmark = pytest.mark.integration


class Trail:
    def __init__(
        self,
        stack: HooksStack,
        publisher: Publisher,
        js: JetStreamContext,
        spill: SpillStore,
        nats_url: str,
        topology: Topology,
    ) -> None:
        self.stack = stack
        self.publisher = publisher
        self.js = js
        self.spill = spill
        self.nats_url = nats_url
        self.topology = topology

    def client(self, key: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.stack.url, api_key=key, max_retries=0, timeout=20)


@pytest.fixture
async def trail(
    nats_url: str, topology: Topology, tmp_path: Path, valkey_client: Any, valkey_prefix: str
) -> AsyncIterator[Trail]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js, topology)
    spill = SpillStore(js, topology.spill_bucket)
    publisher = Publisher(
        nats_url, topology, tmp_path / "outbox.sqlite", ack_timeout_s=1.0, retry_backoff_s=0.1
    )
    await publisher.start()
    stack = await make_hooks_stack(
        sink=publisher, spill=spill, valkey=valkey_client, valkey_prefix=valkey_prefix
    )
    try:
        yield Trail(stack, publisher, js, spill, nats_url, topology)
    finally:
        await stack.close()
        await publisher.close()
        await delete_streams(js, topology)
        # The bucket exists only when something was spilled.
        with contextlib.suppress(Exception):
            await js.delete_object_store(topology.spill_bucket)
        await nc.close()


async def _stream(js: JetStreamContext, topology: Topology) -> list[Event]:
    info = await js.stream_info(topology.traffic_stream)
    out: list[Event] = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(topology.traffic_stream, seq)
        out.append(codec.decode(msg.data or b""))
    return out


async def _traffic_rows(pg_dsn: str, duck_path: str) -> dict[str, dict[str, dict[str, Any]]]:
    conn = await asyncpg.connect(pg_dsn)
    try:
        pg = {r["request_id"]: dict(r) for r in await conn.fetch("SELECT * FROM traffic_event")}
    finally:
        await conn.close()

    def duck() -> dict[str, dict[str, Any]]:
        # The same configuration as the projector's own connection (DuckDB
        # refuses a second, differently configured one in the process).
        with open_duckdb(duck_path) as db:
            cur = db.execute("SELECT * FROM traffic_event")
            cols = [d[0] for d in cur.description]
            return {row[0]: dict(zip(cols, row, strict=True)) for row in cur.fetchall()}

    return {"postgres": pg, "duckdb": await asyncio.to_thread(duck)}


async def _send(trail: Trail) -> dict[str, str]:
    """One request of each kind; returns name -> request id."""
    keys = trail.stack.keys
    ids: dict[str, str] = {}
    async with trail.client(keys.full) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="sim-small", messages=[{"role": "user", "content": f"card {CARD}, please"}]
        )
        ids["redacted"] = raw.headers["x-nexus-request-id"]
        raw = await client.chat.completions.with_raw_response.create(
            model="sim-small", messages=[{"role": "user", "content": "hello there"}]
        )
        ids["clean"] = raw.headers["x-nexus-request-id"]
        with pytest.raises(openai.PermissionDeniedError) as info:
            await client.chat.completions.create(
                model="sim-small", messages=[{"role": "user", "content": INJECTION}]
            )
        ids["blocked"] = info.value.response.headers["x-nexus-request-id"]
    async with trail.client(keys.resp) as client:
        raw_stream = await client.chat.completions.with_raw_response.create(
            model="sim-small", messages=[{"role": "user", "content": LEAKY_PROMPT}], stream=True
        )
        with pytest.raises(openai.APIError):
            async for _ in raw_stream.parse():
                pass
        ids["cut"] = raw_stream.headers["x-nexus-request-id"]
    return ids


async def test_verdicts_of_both_stages_on_the_stream_and_in_traffic_event(
    trail: Trail, topology: Topology, pg_dsn: str, tmp_path: Path
) -> None:
    ids = await _send(trail)
    assert await trail.publisher.flush(10)
    events = await _stream(trail.js, topology)

    def stages(name: str) -> dict[str, StageDecision]:
        return {e.stage: e for e in events if isinstance(e, StageDecision) and e.request_id == ids[name]}

    def verdicts(name: str) -> list[HookVerdict]:
        return [e for e in events if isinstance(e, HookVerdict) and e.request_id == ids[name]]

    for name in ("redacted", "clean", "cut"):
        assert set(stages(name)) == {"request", "response"}, name
        assert {v.stage for v in verdicts(name)} >= {"request"}, name
    assert set(stages("blocked")) == {"request"}  # it never reached a provider
    assert stages("redacted")["request"].decision == "redact"
    assert {v.hook: v.verdict for v in verdicts("redacted")} == {"pii": "redact", "injection": "approve"}
    assert stages("blocked")["request"].blocking_rule == "prompt-injection/ignore-instructions"
    cut = stages("cut")["response"]
    assert (cut.decision, cut.blocking_rule, cut.streaming_mode) == ("block", "leaked-word", "chunked")
    assert [v.verdict for v in verdicts("cut") if v.stage == "response"] == ["block"]
    # The raw card number is nowhere on the stream.
    assert not any(CARD.encode() in msgspec.json.encode(e) for e in events)

    ep = {"nats_url": trail.nats_url, "postgres_dsn": pg_dsn, "duckdb_path": str(tmp_path / "a.duckdb")}
    projector, stop = await start_projector(ep, topology)
    try:
        async with asyncio.timeout(30):
            await projector.caught_up()
        live = await _projected(projector, ids)
        # Rebuilt from the stream: the same rows.
        async with asyncio.timeout(60):
            await projector.replay()
        assert await _projected(projector, ids) == live
    finally:
        await stop()


async def _projected(projector: Projector, ids: dict[str, str]) -> dict[str, dict[str, dict[str, Any]]]:
    s = projector.settings
    assert s.postgres_dsn and s.duckdb_path
    rows = await _traffic_rows(s.postgres_dsn, s.duckdb_path)
    for store, by_id in rows.items():
        r = by_id[ids["redacted"]]
        assert (r["request_hook_decision"], r["response_hook_decision"]) == ("redact", "approve"), store
        assert r["request_hook_blocking_rule"] == "CREDIT_CARD", store
        assert r["request_hook_us"] > 0 and r["response_hook_us"] is not None, store
        assert "pii:CREDIT_CARD" in r["compliance_tags"].split(","), store
        r = by_id[ids["clean"]]
        assert (r["request_hook_decision"], r["response_hook_decision"], r["status"]) == (
            "approve",
            "approve",
            200,
        )
        r = by_id[ids["blocked"]]
        assert (r["request_hook_decision"], r["status"], r["error_code"]) == ("block", 403, "content_blocked")
        assert r["request_hook_blocking_rule"] == "prompt-injection/ignore-instructions", store
        assert r["response_hook_decision"] is None, store
        r = by_id[ids["cut"]]
        assert (r["response_hook_decision"], r["response_hook_blocking_rule"]) == ("block", "leaked-word"), (
            store
        )
        assert r["response_hook_mode"] == "chunked" and r["outcome"] == "failed", store
    # The same facts in both stores.
    cols = (
        "request_hook_decision",
        "request_hook_blocking_rule",
        "response_hook_decision",
        "compliance_tags",
    )
    for rid in ids.values():
        assert {c: rows["postgres"][rid][c] for c in cols} == {c: rows["duckdb"][rid][c] for c in cols}
    return rows


async def test_body_over_the_inline_limit_is_spilled_redacted_and_resolves_exactly(trail: Trail) -> None:
    filler = "lorem ipsum dolor sit amet " * 11_000  # ~300 KB of prose around one card number
    prompt = f"{filler}\nMy card is {CARD}.\n{filler}"
    async with trail.client(trail.stack.keys.full) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="sim-small", messages=[{"role": "user", "content": prompt}]
        )
    rid = raw.headers["x-nexus-request-id"]
    assert await trail.publisher.flush(10)
    events = [e for e in await _stream(trail.js, trail.topology) if e.request_id == rid]
    rr = next(e for e in events if isinstance(e, RequestReceived))
    body = rr.body
    assert body is not None and body.ref is not None and body.inline is None and body.redacted
    assert body.size > INLINE_BODY_LIMIT and body.ref.size == body.size
    await _settled(trail)
    data = await trail.spill.get(body.ref)  # raises SpillIntegrityError on any mismatch
    assert len(data) == body.ref.size and hashlib.sha256(data).hexdigest() == body.ref.sha256
    stored = msgspec.json.decode(data)
    text = stored["messages"][0]["content"]
    assert CARD not in text and "My card is [REDACTED_CREDIT_CARD]." in text and text.count("lorem") == 22_000
    # What the provider received is that same redacted text.
    assert trail.stack.received()[-1]["messages"][0]["content"] == text
    up = next(e for e in events if isinstance(e, UpstreamResult))
    assert up.body is not None and up.body.inline is not None  # a small answer stays inline


async def _settled(trail: Trail) -> None:
    # The spill put runs in the background of the request; the gateway
    # waits for it on close, a reader polls.
    for _ in range(100):
        if not trail.stack.background():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the spill put did not finish")
