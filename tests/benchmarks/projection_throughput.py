"""Projection throughput: events/s into Postgres and into DuckDB, and replay time.

Puts COUNT traffic events (four per request: received, upstream result,
usage, completed) in a fresh stream on the real NATS, then times

  1. the projector catching up into Postgres alone,
  2. the projector catching up into DuckDB alone (with its analytics rollups),
  3. the projector catching up into both (fresh database and file; one
     reader feeds both stores, as ``nexus project`` runs),
  4. ``replay`` of both stores from sequence 1 (the issue's figure: 1M
     events rebuilt in both stores).

Generating the stream is not part of any figure: the first events go
through acknowledged, pipelined JetStream publishes (that rate is printed as
the publish rate), the rest through plain NATS publishes with the same
``Nats-Msg-Id`` headers (JetStream stores them without a round trip each),
checked against the stream's message count before anything is timed.

Each projection line also gives events per CPU-second of the projector
process (this process), which stays meaningful on a machine shared with other
work; the machine, its load average and the load during each phase are
printed, and the last line is the figures as JSON for the harness.

Run from the repository root (real NATS and Postgres on their standard ports):

    python tests/benchmarks/projection_throughput.py              # 200,000 events
    python tests/benchmarks/projection_throughput.py --count 1000000
    python tests/benchmarks/run.py --only-figures projection_throughput.py   # through the harness (1M)

The 1M run needs ~600 MB of JetStream file storage for a few minutes;
everything it creates (stream, databases, DuckDB files) is removed at the
end unless --keep is given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import asyncpg
from nats.aio.client import Client as NATS

from projections.projector import Projector
from projections.replay import replay
from projections.settings import ProjectorSettings
from streams.codec import encode
from streams.jetstream import connect, delete_streams, ensure_streams
from streams.topology import Topology
from tests.projections.helpers import ok_request, publish

_ACKED = 100_000  # events published with acks (the publish-rate figure)
_CHUNK = 5_000  # requests generated at a time, so memory stays flat at 1M


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def _bulk_publish(nc: NATS, topology: Topology, first_request: int, requests: int) -> None:
    """Plain NATS publishes (no ack round trip) with the events' message ids,
    flushed per chunk; the caller checks the stream's count afterwards."""
    for base in range(first_request, first_request + requests, _CHUNK):
        for i in range(base, min(base + _CHUNK, first_request + requests)):
            for ev in ok_request(i):
                await nc.publish(topology.subject_for(ev), encode(ev), headers={"Nats-Msg-Id": ev.id})
        await nc.flush(timeout=60)


async def generate(nc: NATS, topology: Topology, count: int) -> tuple[int, float]:
    """Fill the stream with ``count`` events; returns (last sequence, acked publish rate)."""
    js = nc.jetstream()
    requests = count // 4
    acked = min(requests, _ACKED // 4)
    started = time.perf_counter()
    last = 0
    for base in range(0, acked, _CHUNK):
        events = [ev for i in range(base, min(base + _CHUNK, acked)) for ev in ok_request(i)]
        last = await publish(js, topology, events, window=1_000)
    rate = last / (time.perf_counter() - started)
    print(f"  acknowledged publishes: {last:,} events at {rate:,.0f} events/s", flush=True)
    if requests > acked:
        started = time.perf_counter()
        await _bulk_publish(nc, topology, acked, requests - acked)
        deadline = time.monotonic() + 120
        while True:
            info = await js.stream_info(topology.traffic_stream)
            last = int(info.state.last_seq)
            if int(info.state.messages) >= requests * 4 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        print(f"  bulk-loaded the rest in {time.perf_counter() - started:.1f} s", flush=True)
    info = await js.stream_info(topology.traffic_stream)
    if int(info.state.messages) != requests * 4:
        raise SystemExit(f"the stream holds {info.state.messages} messages, expected {requests * 4}")
    return last, rate


async def _catch_up(settings: ProjectorSettings, last: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) to project ``last`` events."""
    started, cpu = time.perf_counter(), time.process_time()
    async with Projector(settings) as projector:
        await projector.wait_for(last)
    return time.perf_counter() - started, time.process_time() - cpu


def _line(label: str, events: int, wall: float, cpu: float) -> str:
    # The machine may be shared: events per CPU-second of the projector
    # process says what it does with the CPU it got, whatever else is running.
    return (
        f"{label:<9} {events:,} events in {wall:.2f} s = {events / wall:,.0f} events/s "
        f"(projector process used {cpu / wall:.0%} of a core: {events / cpu:,.0f} events per CPU-second; "
        f"load average after: {_load()})"
    )


async def main(args: argparse.Namespace) -> None:
    prefix = f"BENCH{uuid.uuid4().hex[:6]}".upper()
    topology = Topology(prefix=prefix)
    dbname = f"nexus_bench_{prefix.lower()}"
    admin = await asyncpg.connect(args.pg_admin_dsn)
    workdir = Path(tempfile.mkdtemp(prefix="nexus-bench-"))
    nc = await connect(args.nats_url, name="projection-bench")
    js = nc.jetstream()
    figures: dict[str, Any] = {"events": 0, "machine": machine()}
    try:
        await ensure_streams(js, topology)
        requests = args.count // 4
        print(f"machine: {figures['machine']}; load average {_load()}")
        print(f"generating {requests * 4:,} events ({requests:,} requests) in {topology.traffic_stream} ...")
        started = time.perf_counter()
        last, publish_rate = await generate(nc, topology, requests * 4)
        print(f"  stream ready in {time.perf_counter() - started:.1f} s (not part of any figure)", flush=True)
        figures.update(events=last, publish_events_per_s=round(publish_rate))

        common: dict[str, Any] = {
            "nats_url": args.nats_url,
            "topology": topology,
            "batch_size": args.batch_size,
        }
        dsns = []
        for suffix in ("", "_2"):
            await admin.execute(f'CREATE DATABASE "{dbname}{suffix}"')
            dsns.append(f"{args.pg_admin_dsn.rpartition('/')[0]}/{dbname}{suffix}")
        pg_only = ProjectorSettings(postgres_dsn=dsns[0], duckdb_path=None, **common)
        duck_only = ProjectorSettings(postgres_dsn=None, duckdb_path=str(workdir / "a.duckdb"), **common)
        both = ProjectorSettings(postgres_dsn=dsns[0], duckdb_path=str(workdir / "a.duckdb"), **common)
        both_fresh = ProjectorSettings(postgres_dsn=dsns[1], duckdb_path=str(workdir / "b.duckdb"), **common)

        print(f"load average before projecting: {_load()}")
        for key, label, settings in (
            ("postgres", "postgres:", pg_only),
            ("duckdb", "duckdb:", duck_only),
            ("both", "both:", both_fresh),
        ):
            wall, cpu = await _catch_up(settings, last)
            print(_line(label, last, wall, cpu), flush=True)
            figures[f"{key}_events_per_s"] = round(last / wall)
            figures[f"{key}_events_per_cpu_s"] = round(last / cpu)

        started, cpu = time.perf_counter(), time.process_time()
        result = await replay(both)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        assert result == {"postgres": last, "duckdb": last}, result
        print(f"replay of both stores from sequence 1: {last:,} events in {wall:.2f} s")
        print(_line("  replay:", last, wall, cpu))
        figures.update(replay_seconds=round(wall, 2), replay_events_per_s=round(last / wall))

        rows = await asyncpg.connect(dsns[0])
        try:
            count = await rows.fetchval("SELECT count(*) FROM traffic_event")
        finally:
            await rows.close()
        print(f"rows in traffic_event: {count:,} (expected {requests:,})")
        figures["load_average_after"] = _load()
        print(json.dumps(figures))
    finally:
        if not args.keep:
            await delete_streams(js, topology)
            for suffix in ("", "_2"):
                await admin.execute(f'DROP DATABASE IF EXISTS "{dbname}{suffix}" WITH (FORCE)')
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept: stream {topology.traffic_stream}, databases {dbname}(_2), {workdir}")
        await admin.close()
        await nc.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=200_000, help="events to publish (default 200,000)")
    parser.add_argument("--batch-size", type=int, default=ProjectorSettings.batch_size)
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    parser.add_argument("--pg-admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--keep", action="store_true", help="keep the stream, databases and DuckDB files")
    asyncio.run(main(parser.parse_args()))
