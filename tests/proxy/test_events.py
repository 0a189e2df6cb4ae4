"""Shadow-AI discovery end to end: a proxy node publishing to the real
JetStream, the projector folding its events into Postgres and DuckDB, and
the analytics question "who uses which AI service" answered from them."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import duckdb
import openai
import pytest

from ingress.proxy.auth import hash_password
from nexus.sim.server import SimServer
from projections.projector import Projector
from projections.settings import ProjectorSettings
from streams.publisher import Publisher
from streams.topology import Topology
from tests.proxy.conftest import MakeProxy, client_context, http_get, tls_through
from tests.proxy.pki import Pki

pytestmark = pytest.mark.integration

WHO_USES_WHAT = """
SELECT user_id, ai_service, bump_status, count(*) AS connections,
       sum(bytes_up) > 0 AS sent, sum(bytes_down) > 0 AS received
FROM traffic_event
WHERE endpoint = 'connect' AND ai_service IS NOT NULL
GROUP BY user_id, ai_service, bump_status
ORDER BY user_id, ai_service
"""


# The view that answers it (Postgres ai_service_usage, DuckDB
# analytics.ai_service_usage): alice's one bumped connection carried one
# LLM call; bob's two spliced ones carried bytes the proxy never read.
AI_SERVICE_USAGE = """
SELECT user_id, client_ip, ai_service, connections, bumped, relayed, refused, devices,
       bytes_up > 0, bytes_down > 0, first_seen <= last_seen, requests, total_tokens > 0
FROM {view} ORDER BY user_id, ai_service
"""
USAGE = [
    ("alice", "127.0.0.1", "openai", 1, 1, 0, 0, 0, True, True, True, 1, True),
    ("bob", "127.0.0.1", "anthropic", 2, 0, 2, 0, 0, True, True, True, 0, False),
]


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_who_uses_which_ai_service_from_the_read_models(
    make_proxy: MakeProxy,
    upstream: SimServer,
    upstream_pki: Pki,
    proxy_ca: tuple[Path, Path],
    publisher: Publisher,
    nats_url: str,
    pg_dsn: str,
    topology: Topology,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    users = [
        {"name": "alice", "password_hash": hash_password("alice-password")},
        {"name": "bob", "password_hash": hash_password("bob-password")},
    ]
    node = await make_proxy(
        upstream,
        events=publisher,
        auth={"required": True, "users": users},
        interception=[{"host": "api.openai.com", "adapter": "openai"}],
    )
    # alice: the openai SDK, bumped.
    monkeypatch.setenv("HTTPS_PROXY", f"http://alice:alice-password@{node.host}:{node.port}")
    monkeypatch.setenv("SSL_CERT_FILE", str(proxy_ca[0]))
    client = openai.AsyncOpenAI(api_key="sk-alice-own-key", max_retries=0)
    try:
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    finally:
        await client.close()
    # bob: Anthropic's host, not listed for interception, so spliced (still seen).
    auth = {"Proxy-Authorization": _basic("bob", "bob-password")}
    for _ in range(2):
        r, w = await tls_through(node, "api.anthropic.com", client_context(upstream_pki.ca_path), auth)
        assert (await http_get(r, w, "api.anthropic.com", "/healthz"))[0] == 200
        w.close()
    # and a host that is not an AI service.
    r, w = await tls_through(node, "plain.example.com", client_context(upstream_pki.ca_path), auth)
    w.close()
    await node.close()  # ends alice's kept-alive connection: every connection event is out

    settings = ProjectorSettings(
        nats_url=nats_url,
        postgres_dsn=pg_dsn,
        duckdb_path=str(tmp_path / "proxy.duckdb"),
        topology=topology,
        batch_size=500,
        fetch_timeout_s=0.05,
    )
    expected = [
        ("alice", "openai", "bumped", 1, True, True),
        ("bob", "anthropic", "spliced", 2, True, True),
    ]
    import asyncpg

    async with Projector(settings):
        rows: list[Any] = []
        for _ in range(100):
            conn = await asyncpg.connect(pg_dsn)
            try:
                rows = [tuple(r) for r in await conn.fetch(WHO_USES_WHAT)]
                # alice's chat call ran the pipeline: its row is a request's.
                fingerprints = await conn.fetch(
                    "SELECT credential_fingerprint, credential_class, requested_model, target_host "
                    "FROM traffic_event WHERE ingress = 'proxy' AND endpoint = 'chat' AND outcome IS NOT NULL"
                )
            except asyncpg.UndefinedTableError:
                rows = []
            finally:
                await conn.close()
            if rows == expected and fingerprints:
                break
            await asyncio.sleep(0.1)
        assert rows == expected
        (fp,) = fingerprints
        assert fp["credential_class"] == "unknown" and len(fp["credential_fingerprint"]) == 16
        assert (fp["requested_model"], fp["target_host"]) == ("gpt-4o-mini", "api.openai.com")
        conn = await asyncpg.connect(pg_dsn)
        try:
            usage = [tuple(r) for r in await conn.fetch(AI_SERVICE_USAGE.format(view="ai_service_usage"))]
        finally:
            await conn.close()
    assert usage == USAGE
    duck = duckdb.connect(settings.duckdb_path, read_only=True)
    try:
        assert [tuple(r) for r in duck.execute(WHO_USES_WHAT).fetchall()] == expected
        view = AI_SERVICE_USAGE.format(view="analytics.ai_service_usage")
        assert [tuple(r) for r in duck.execute(view).fetchall()] == USAGE
    finally:
        duck.close()
