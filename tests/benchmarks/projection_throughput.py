"""Projection throughput: events/s into Postgres and into DuckDB, and replay time.

Publishes COUNT traffic events (four per request: received, upstream result,
usage, completed) to a fresh stream on the real NATS, then times

  1. the projector catching up into Postgres alone,
  2. the projector catching up into DuckDB alone,
  3. the projector catching up into both (fresh database and file),
  4. ``replay`` of both stores from sequence 1.

Each line also gives events per CPU-second of the projector process, which
stays meaningful on a machine shared with other work.

Run from the repository root (real NATS and Postgres on their standard ports):

    python tests/benchmarks/projection_throughput.py              # 200,000 events
    python tests/benchmarks/projection_throughput.py --count 1000000

The 1M run publishes for about a minute first and needs ~1 GB of JetStream
file storage; everything it creates (stream, database, DuckDB file) is
removed at the end unless --keep is given.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import asyncpg

from projections.projector import Projector
from projections.replay import replay
from projections.settings import ProjectorSettings
from streams.jetstream import connect, delete_streams, ensure_streams
from streams.topology import Topology
from tests.projections.helpers import ok_request, publish


async def _catch_up(settings: ProjectorSettings, last: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) to project ``last`` events."""
    started, cpu = time.perf_counter(), time.process_time()
    async with Projector(settings) as projector:
        await projector.wait_for(last)
    return time.perf_counter() - started, time.process_time() - cpu


def _line(label: str, events: int, wall: float, cpu: float) -> str:
    # The machine may be shared: events per CPU-second of the projector
    # process says what one core does, whatever else is running.
    return (
        f"{label:<9} {events:,} events in {wall:.2f} s = {events / wall:,.0f} events/s "
        f"(projector process used {cpu / wall:.0%} of a core: {events / cpu:,.0f} events per CPU-second)"
    )


async def main(args: argparse.Namespace) -> None:
    prefix = f"BENCH{uuid.uuid4().hex[:6]}".upper()
    topology = Topology(prefix=prefix)
    dbname = f"nexus_bench_{prefix.lower()}"
    admin = await asyncpg.connect(args.pg_admin_dsn)
    await admin.execute(f'CREATE DATABASE "{dbname}"')
    dsn = f"{args.pg_admin_dsn.rpartition('/')[0]}/{dbname}"
    workdir = Path(tempfile.mkdtemp(prefix="nexus-bench-"))
    duck = workdir / "analytics.duckdb"
    nc = await connect(args.nats_url, name="projection-bench")
    js = nc.jetstream()
    await ensure_streams(js, topology)
    try:
        requests = args.count // 4
        print(f"publishing {requests * 4:,} events ({requests:,} requests) to {topology.traffic_stream} ...")
        started = time.perf_counter()
        last = 0
        chunk = 5_000  # requests per chunk, so memory stays flat at 1M
        for base in range(0, requests, chunk):
            events = [ev for i in range(base, min(base + chunk, requests)) for ev in ok_request(i)]
            last = await publish(js, topology, events, window=1_000)
        elapsed = time.perf_counter() - started
        print(f"  published in {elapsed:.1f} s ({last / elapsed:,.0f} events/s)")

        common = {
            "nats_url": args.nats_url,
            "topology": topology,
            "batch_size": args.batch_size,
        }
        pg_only = ProjectorSettings(postgres_dsn=dsn, duckdb_path=None, **common)  # type: ignore[arg-type]
        duck_only = ProjectorSettings(postgres_dsn=None, duckdb_path=str(duck), **common)  # type: ignore[arg-type]
        both = ProjectorSettings(postgres_dsn=dsn, duckdb_path=str(duck), **common)  # type: ignore[arg-type]
        # both stores at once (as `nexus project` runs), into a second database and file
        await admin.execute(f'CREATE DATABASE "{dbname}_2"')
        both_fresh = ProjectorSettings(
            postgres_dsn=f"{dsn}_2",
            duckdb_path=str(workdir / "second.duckdb"),
            **common,  # type: ignore[arg-type]
        )

        print(f"load average before projecting: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(_line("postgres:", last, *await _catch_up(pg_only, last)))
        print(_line("duckdb:", last, *await _catch_up(duck_only, last)))
        print(_line("both:", last, *await _catch_up(both_fresh, last)))

        started, cpu = time.perf_counter(), time.process_time()
        await replay(both)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        print(f"replay of both stores from sequence 1: {wall:.2f} s")
        print(_line("  replay:", 2 * last, wall, cpu))

        rows = await asyncpg.connect(dsn)
        try:
            count = await rows.fetchval("SELECT count(*) FROM traffic_event")
        finally:
            await rows.close()
        print(f"rows in traffic_event: {count:,} (expected {requests:,})")
    finally:
        if not args.keep:
            await delete_streams(js, topology)
            await admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            await admin.execute(f'DROP DATABASE IF EXISTS "{dbname}_2" WITH (FORCE)')
            for p in workdir.iterdir():
                p.unlink()
            workdir.rmdir()
        else:
            print(f"kept: stream {topology.traffic_stream}, database {dbname}, {duck}")
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
    parser.add_argument("--keep", action="store_true", help="keep the stream, database and DuckDB file")
    asyncio.run(main(parser.parse_args()))
