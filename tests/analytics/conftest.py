from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from streams.topology import Topology
from tests.analytics.pipeline import project
from tests.analytics.traffic import generate


@pytest.fixture(scope="module")
async def projected_db(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DuckDB file filled through the real pipeline: 600 requests over four
    days published to JetStream and projected by the projector."""
    topology = Topology(prefix=f"TAN{uuid.uuid4().hex[:10]}".upper())
    db = tmp_path_factory.mktemp("analytics") / "nexus.duckdb"
    events, _ = generate(600, days=4, seed=3)
    await project(nats_url, topology, events, db)
    return db
