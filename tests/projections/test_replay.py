"""``replay`` rebuilds both stores identical to the live projection."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from projections.projector import Projector
from projections.replay import replay
from projections.settings import ProjectorSettings
from projections.store import StoreBusy
from streams.codec import encode
from streams.events import Event
from streams.topology import Topology
from tests.projections.helpers import failed_request, ok_request, publish, publish_raw, retried_request
from tests.projections.test_projector import _rows

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _workload(n: int) -> list[Event]:
    events: list[Event] = []
    for i in range(n):
        kind = i % 10
        if kind == 0:
            events += failed_request(i)
        elif kind == 1:
            events += retried_request(i)
        else:
            events += ok_request(i, stream=kind % 2 == 0)
    # shuffle deterministically so facts of a request straddle batches
    return events[::2] + events[1::2]


async def _live(js: JetStreamContext, topology: Topology, settings: ProjectorSettings, n: int) -> int:
    events = _workload(n)
    async with Projector(settings) as projector:
        last = await publish(js, topology, events[: len(events) // 2])
        async with asyncio.timeout(20):
            await projector.wait_for(last)  # live: applied while traffic arrives
        await publish_raw(js, topology.traffic_subject("future.event"), b'{"type":"future.event"}', "fut-1")
        dup = events[3]
        await publish_raw(js, topology.subject_for(dup), encode(dup), f"{dup.id}-again")
        last = await publish(js, topology, events[len(events) // 2 :])
        async with asyncio.timeout(20):
            await projector.wait_for(last)
    return last


async def test_replay_rebuilds_both_stores_identical_to_live(
    js: JetStreamContext, topology: Topology, settings: ProjectorSettings
) -> None:
    last = await _live(js, topology, settings, 400)
    live = await _rows(settings)
    assert len(live["postgres"]) == 400 and live["postgres"] and live["duckdb"]
    seen: list[tuple[str, int, int]] = []
    small = ProjectorSettings(**{**settings.__dict__, "batch_size": 37})  # other batch boundaries
    result = await replay(small, progress=lambda name, pos, total: seen.append((name, pos, total)))
    assert result == {"postgres": last, "duckdb": last}
    assert await _rows(settings) == live
    assert seen[-1] == ("duckdb", last, last) and any(s[0] == "postgres" for s in seen)


async def test_replay_under_a_running_projector(
    js: JetStreamContext, topology: Topology, settings: ProjectorSettings
) -> None:
    last = await _live(js, topology, settings, 100)
    live = await _rows(settings)
    async with Projector(settings) as projector:
        # a standalone replay is refused while the projector writes
        with pytest.raises(StoreBusy):
            await replay(settings, ["postgres"])
        assert await projector.replay() == {"postgres": last, "duckdb": last}
        # the lanes resume after the rebuild and keep projecting
        more = await publish(js, topology, ok_request(999, prefix="after"))
        async with asyncio.timeout(5):
            await projector.wait_for(more)
    rebuilt = await _rows(settings)
    for name in ("postgres", "duckdb"):
        assert [r for r in rebuilt[name] if not str(r["request_id"]).startswith("after-")] == live[name]
        assert len(rebuilt[name]) == len(live[name]) + 1


def _cli(args: list[str], settings: ProjectorSettings) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "NEXUS_NATS_URL": settings.nats_url,
        "NEXUS_POSTGRES_DSN": settings.postgres_dsn or "",
        "NEXUS_DUCKDB_PATH": settings.duckdb_path or "",
        "NEXUS_STREAM_PREFIX": settings.topology.prefix,
    }
    return subprocess.run(
        [sys.executable, "-m", "nexus.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
async def test_nexus_replay_command(
    js: JetStreamContext, topology: Topology, settings: ProjectorSettings
) -> None:
    last = await _live(js, topology, settings, 100)
    live = await _rows(settings)
    done = await asyncio.to_thread(_cli, ["replay", "--projection", "all"], settings)
    assert done.returncode == 0, done.stderr
    assert f"postgres: rebuilt up to stream sequence {last}" in done.stdout
    assert f"duckdb: rebuilt up to stream sequence {last}" in done.stdout
    assert "100.0%" in done.stderr and "replay postgres" in done.stderr  # the progress bar
    assert await _rows(settings) == live

    only_duck = await asyncio.to_thread(_cli, ["replay", "--projection", "duckdb"], settings)
    assert only_duck.returncode == 0 and "postgres" not in only_duck.stdout

    # bad input: one clear line, no traceback
    bad = await asyncio.to_thread(_cli, ["replay", "--stream-prefix", "no spaces allowed"], settings)
    assert bad.returncode == 1 and "NEXUS_STREAM_PREFIX" in bad.stderr and "Traceback" not in bad.stderr
    missing = await asyncio.to_thread(_cli, ["replay", "--stream-prefix", "NOSUCHSTREAM"], settings)
    assert (
        missing.returncode == 1 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    )
