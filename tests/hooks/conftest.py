"""Helpers for the compliance engine tests: engines are built from YAML
through the real config loader, so every test also exercises validation."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from adapters.canonical import ChatRequest, Message
from ingress.hooks import ComplianceEngine, Connection
from streams.config_hooks import HooksConfig
from streams.config_validation import parse_config

BASE = """
orgs: [{id: acme}, {id: globex}]
projects: [{id: p1, org: acme}, {id: p2, org: globex}]
"""


def hooks_config(hooks_yaml: str) -> HooksConfig:
    text = BASE + "hooks:\n" + textwrap.indent(textwrap.dedent(hooks_yaml), "  ")
    return parse_config(text).hooks


def chat(*texts: str) -> ChatRequest:
    return ChatRequest(model="m", messages=[Message(role="user", content=t) for t in texts])


CONN = Connection(client_ip="203.0.113.7", ingress="gateway", org_id="acme", project_id="p1", key_id="k1")


@pytest.fixture
async def make_engine() -> AsyncIterator[Callable[..., ComplianceEngine]]:
    engines: list[ComplianceEngine] = []

    def build(hooks_yaml: str, **kw: Any) -> ComplianceEngine:
        engine = ComplianceEngine(hooks_config(hooks_yaml), **kw)
        engines.append(engine)
        return engine

    yield build
    for e in engines:
        await e.aclose()
