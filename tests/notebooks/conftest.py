from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from streams.topology import Topology
from tests.analytics.pipeline import project
from tests.analytics.traffic import generate
from tests.conftest import RUN_ID


async def _projected(nats_url: str, base: Path, *, n: int, compliance: bool) -> Path:
    # T<run id>: the session drops it with the rest of the run's streams
    topology = Topology(prefix=f"T{RUN_ID}NB{uuid.uuid4().hex[:6]}".upper())
    db = base / "nexus.duckdb"
    events, _ = generate(n, days=5, seed=21, compliance=compliance)
    await project(nats_url, topology, events, db)
    return db


@pytest.fixture(scope="module")
async def analytics_db(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five days of traffic, compliance verdicts included, published to
    JetStream and projected into DuckDB by the projector."""
    return await _projected(nats_url, tmp_path_factory.mktemp("nb"), n=2000, compliance=True)


@pytest.fixture(scope="module")
async def analytics_db_without_verdicts(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same pipeline before the compliance engine: no verdict events."""
    return await _projected(nats_url, tmp_path_factory.mktemp("nb0"), n=400, compliance=False)
