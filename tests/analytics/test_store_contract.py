"""The analytics store is a drop-in for the base DuckDB store: it passes the
same store contract (tests/projections), and after each case its rollups
agree with its own facts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from projections.analytics.store import AnalyticsDuckDBStore
from tests.projections.test_store_contract import StoreContract


class TestAnalyticsDuckDBStore(StoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[AnalyticsDuckDBStore]:
        s = AnalyticsDuckDBStore(tmp_path / "a.duckdb", refresh_every_s=0)
        await s.open()
        yield s
        if s._conn is not None:
            await s.refresh_now()
            # Whatever the case did, the day rollup counts exactly the
            # finished requests of traffic_event.
            rolled = s.conn.execute("SELECT coalesce(sum(requests), 0) FROM analytics.rollup_day").fetchall()
            facts = s.conn.execute("SELECT count(*) FROM traffic_event WHERE outcome IS NOT NULL").fetchall()
            assert rolled[0][0] == facts[0][0]
        await s.close()
