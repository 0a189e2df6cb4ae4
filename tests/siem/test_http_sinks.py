"""The Elastic ``_bulk`` and webhook sinks against real local HTTP servers
shaped like the real thing: per-item statuses (201, 409 for an id already
indexed, 429 to retry), API-key and bearer auth, and an HMAC signature the
receiver verifies."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from aiohttp import web
from nats.aio.client import Client as NATS
from prometheus_client import CollectorRegistry

from processors.siem import SiemForwarder
from streams import codec
from streams.config_siem import ElasticSink, SiemConfig, SinkFilter, WebhookSink
from streams.events import Node, RequestFailed, Tenant
from streams.topology import Topology

pytestmark = pytest.mark.integration

API_KEY = "elastic-api-key-for-tests"
BEARER = "webhook-bearer-token-xyz"
SIGNING = "webhook-signing-secret-0123456789"


class ElasticServer:
    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.creates: Counter[str] = Counter()
        self.throttle_once: set[str] = set()
        self.poison: set[str] = set()
        self.bad_auth = 0

    async def bulk(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"ApiKey {API_KEY}":
            self.bad_auth += 1
            return web.json_response({"error": "unauthorized"}, status=401)
        if request.headers.get("Content-Type") != "application/x-ndjson":
            return web.json_response({"error": "bad content type"}, status=406)
        lines = [ln for ln in (await request.read()).decode().split("\n") if ln]
        items = []
        for action_line, doc_line in zip(lines[::2], lines[1::2], strict=True):
            meta = json.loads(action_line)["create"]
            _id, doc = meta["_id"], json.loads(doc_line)
            self.creates[_id] += 1
            if _id in self.throttle_once:
                self.throttle_once.discard(_id)
                status = 429
            elif _id in self.poison:
                items.append(
                    {"create": {"_id": _id, "status": 400, "error": {"type": "mapper_parsing_exception"}}}
                )
                continue
            elif _id in self.docs:
                status = 409
            else:
                self.docs[_id] = doc | {"_index": meta["_index"]}
                status = 201
            items.append({"create": {"_id": _id, "status": status}})
        errors = any(i["create"]["status"] >= 300 for i in items)
        return web.json_response({"took": 1, "errors": errors, "items": items})


class WebhookServer:
    def __init__(self) -> None:
        self.ids: Counter[str] = Counter()
        self.bad_signature = 0

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        expected = "sha256=" + hmac.new(SIGNING.encode(), body, hashlib.sha256).hexdigest()
        if request.headers.get("Authorization") != f"Bearer {BEARER}" or not hmac.compare_digest(
            request.headers.get("X-Nexus-Signature", ""), expected
        ):
            self.bad_signature += 1
            return web.Response(status=401)
        for ev in json.loads(body)["events"]:
            self.ids[ev["id"]] += 1
        return web.Response(status=204)


@pytest.fixture
async def servers() -> AsyncIterator[tuple[ElasticServer, WebhookServer, int]]:
    elastic, webhook = ElasticServer(), WebhookServer()
    app = web.Application()
    app.router.add_post("/es/_bulk", elastic.bulk)
    app.router.add_post("/hook", webhook.hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield elastic, webhook, port
    await runner.cleanup()


async def test_elastic_bulk_and_signed_webhook(
    nc: NATS,
    js: nats.js.JetStreamContext,
    topology: Topology,
    servers: tuple[ElasticServer, WebhookServer, int],
) -> None:
    elastic, webhook, port = servers
    events = [
        RequestFailed(
            request_id=f"r{i}",
            tenant=Tenant(org_id="acme"),
            node=Node(kind="gateway", id="g"),
            status=500 + i % 3,
        )
        for i in range(24)
    ]
    ids = [e.id for e in events]
    elastic.throttle_once = {ids[3], ids[7]}  # per-item 429: resent, not dead-lettered
    elastic.poison = {ids[11]}  # per-item 400: dead-lettered after max_attempts
    elastic.docs[ids[0]] = {"pre": "indexed"}  # already there: 409 counts as delivered
    common: dict[str, Any] = {
        "allow_private_network": True,
        "deliver": "all",
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.2,
        "max_attempts": 2,
        "batch_size": 10,
    }
    cfg = SiemConfig(
        sinks=(
            ElasticSink(name="es", url=f"http://127.0.0.1:{port}/es", api_key_env="ES_KEY", **common),
            WebhookSink(
                name="hook",
                url=f"http://127.0.0.1:{port}/hook",
                token_env="HOOK_TOKEN",
                signing_secret_env="HOOK_SIGNING",
                filter=SinkFilter(statuses=("500",)),
                **common,
            ),
        )
    )
    registry = CollectorRegistry()
    env = {"ES_KEY": API_KEY, "HOOK_TOKEN": BEARER, "HOOK_SIGNING": SIGNING}
    forwarder = SiemForwarder(nc, topology, cfg, env=env, registry=registry)
    await forwarder.start()
    try:
        for e in events:
            await js.publish(topology.subject_for(e), codec.encode(e), headers={"Nats-Msg-Id": e.id})
        want_hook = {e.id for e in events if e.status == 500}
        async with asyncio.timeout(15):
            while set(elastic.docs) != set(ids) - {ids[11]} or set(webhook.ids) != want_hook:
                await asyncio.sleep(0.05)
            while not registry.get_sample_value("nexus_siem_dead_lettered_total", {"sink": "es"}):
                await asyncio.sleep(0.05)
    finally:
        await forwarder.stop()
    assert elastic.bad_auth == 0 and webhook.bad_signature == 0
    assert elastic.docs[ids[0]] == {"pre": "indexed"}
    assert elastic.docs[ids[5]]["_index"] == "nexus-events" and "@timestamp" in elastic.docs[ids[5]]
    assert elastic.creates[ids[3]] == 2 and elastic.creates[ids[11]] == 2
    assert all(c == 1 for c in webhook.ids.values())
    assert registry.get_sample_value("nexus_siem_forwarded_total", {"sink": "es"}) == 23
    assert registry.get_sample_value("nexus_siem_forwarded_total", {"sink": "hook"}) == len(want_hook)
    assert registry.get_sample_value("nexus_siem_filtered_total", {"sink": "hook"}) == 24 - len(want_hook)
