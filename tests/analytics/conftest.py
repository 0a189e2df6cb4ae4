from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from streams.topology import Topology
from tests.analytics.pipeline import project
from tests.analytics.traffic import generate
from tests.conftest import RUN_ID


@pytest.fixture(scope="module")
async def projected_db(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DuckDB file filled through the real pipeline: 600 requests over four
    days published to JetStream and projected by the projector."""
    # T<run id>: the session drops it with the rest of the run's streams
    topology = Topology(prefix=f"T{RUN_ID}AN{uuid.uuid4().hex[:6]}".upper())
    db = tmp_path_factory.mktemp("analytics") / "nexus.duckdb"
    events, _ = generate(600, days=4, seed=3)
    await project(nats_url, topology, events, db)
    return db
