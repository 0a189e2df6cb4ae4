"""What the proxy's pipeline tests share (tests/proxy/test_pipeline*.py):
a proxy whose hooks redact a card number, block a codename and withhold an
answer that leaks a word, started for the SDKs of this process (which reach
it, and trust its CA, through the environment only); what the simulated
provider received; and the traffic_event rows the projector folds from the
proxy's events."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest

from ingress.proxy.node import ProxyNode
from ingress.proxy.service import build_engine
from nexus.sim.server import SimServer
from nexus.sim.text import completion_words
from projections.projector import Projector
from projections.settings import ProjectorSettings
from streams.config import NexusConfig
from streams.config_snapshot import snapshot_from_config
from streams.topology import Topology
from tests.proxy.conftest import FAKE_HOSTS, SECRET, MakeProxy
from tests.proxy.pki import Pki

CARD = "4111 1111 1111 1111"  # a Visa test number: passes Luhn
FORBIDDEN = "project-nightingale"
LEAK = "secret"
OPENAI_MODEL = "gpt-4o-mini"
CLAUDE_MODEL = "claude-sonnet-4-5"


def answer_prompt(model: str, *, leaks: bool, template: str = "tell me about the proxy, take {}") -> str:
    """A prompt whose simulated answer says LEAK (or never does)."""
    for i in range(5000):
        prompt = template.format(i)
        words = " ".join(completion_words(model, prompt))
        if (f" {LEAK} " in f" {words} ") == leaks and (leaks or LEAK not in words):
            return prompt
    raise AssertionError("no prompt found")  # pragma: no cover


def pipeline_config(proxy_ca: tuple[Path, Path], upstream_pki: Pki, port: int) -> NexusConfig:
    raw: dict[str, Any] = {
        "proxy": {
            "tls": {
                "cas": [{"cert_file": str(proxy_ca[0]), "key_file": str(proxy_ca[1])}],
                "upstream_ca_files": [str(upstream_pki.ca_path)],
            },
            "resolve": {f"{h}:443": f"127.0.0.1:{port}" for h in FAKE_HOSTS},
            "interception": [
                {"host": "api.openai.com", "adapter": "openai"},
                {"host": "api.anthropic.com", "adapter": "anthropic"},
            ],
        },
        # Configured models price the calls made to them with the callers' own keys.
        "providers": [
            {"name": "corp-openai", "kind": "openai", "base_url": "https://api.openai.com/v1"},
            {"name": "corp-anthropic", "kind": "anthropic", "base_url": "https://api.anthropic.com"},
        ],
        "models": [
            {"name": OPENAI_MODEL, "provider": "corp-openai", "price": {"input": 150.0, "output": 600.0}},
            {"name": CLAUDE_MODEL, "provider": "corp-anthropic", "price": {"input": 300.0, "output": 1500.0}},
        ],
        "hooks": {
            "streaming": {"mode": "chunked", "window_chars": 24, "holdback_chars": 12},
            "pipeline": [
                {
                    "id": "pii",
                    "type": "pii-detector",
                    "stage": "request",
                    "settings": {"entities": ["CREDIT_CARD"], "action": "redact"},
                },
                {
                    "id": "codenames",
                    "type": "keyword-filter",
                    "stage": "request",
                    "settings": {"patterns": [FORBIDDEN], "rule": "codename", "action": "block"},
                },
                {
                    "id": "no-secrets-out",
                    "type": "keyword-filter",
                    "stage": "response",
                    "settings": {"patterns": [rf"\b{LEAK}\b"], "rule": "leaked-word", "action": "block"},
                },
            ],
        },
    }
    return msgspec.convert(raw, NexusConfig)


def monitored(cfg: NexusConfig) -> NexusConfig:
    """``cfg`` with every hook in monitor mode."""
    raw = msgspec.to_builtins(cfg)
    for hook in raw["hooks"]["pipeline"]:
        hook["mode"] = "monitor"
    return msgspec.convert(raw, NexusConfig)


@contextlib.asynccontextmanager
async def started(
    make_proxy: MakeProxy,
    cfg: NexusConfig,
    proxy_ca: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    events: Any,
) -> AsyncIterator[ProxyNode]:
    """A proxy with ``cfg`` (its hooks engine built); the SDKs of this
    process use it (and trust its CA) through the environment only."""
    engine = await build_engine(snapshot_from_config(cfg, SECRET), None, "nexus:", "px-1")
    try:
        node = await make_proxy(config=cfg, events=events, engine=engine)
        monkeypatch.setenv("HTTPS_PROXY", f"http://{node.host}:{node.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.setenv("SSL_CERT_FILE", str(proxy_ca[0]))
        try:
            yield node
        finally:
            await node.close()
    finally:
        await engine.aclose()


def upstream_requests(upstream: SimServer) -> list[Any]:
    """What the simulated provider received, in order."""
    return list(upstream.state.recorder.snapshot()["requests"])


async def projected(
    *,
    nats_url: str,
    pg_dsn: str,
    topology: Topology,
    tmp_path: Path,
    query: str,
    expected: list[tuple[Any, ...]],
) -> list[tuple[Any, ...]]:
    """The rows ``query`` finds once the projector folded the events already
    published (polled until they are ``expected``, for up to 15 s)."""
    settings = ProjectorSettings(
        nats_url=nats_url,
        postgres_dsn=pg_dsn,
        duckdb_path=str(tmp_path / "analytics.duckdb"),
        topology=topology,
        batch_size=500,
        fetch_timeout_s=0.05,
    )
    rows: list[tuple[Any, ...]] = []
    async with Projector(settings):
        for _ in range(150):
            conn = await asyncpg.connect(pg_dsn)
            try:
                rows = [tuple(r) for r in await conn.fetch(query)]
            except asyncpg.UndefinedTableError:
                rows = []
            finally:
                await conn.close()
            if rows == expected:
                break
            await asyncio.sleep(0.1)
    return rows
