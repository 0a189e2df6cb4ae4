"""Audit processor throughput: hash-chained records/s into Postgres.

Puts COUNT traffic events in a fresh stream on the real NATS (generation is
not timed; see projection_throughput.py), then times the audit processor
catching up from an empty database: every event becomes a chained
``audit_log`` row (its inline body digested, the bytes kept in
``audit_body``), committed with its checkpoint batch by batch.  Checks
``nexus audit verify``'s rule over the result, prints the machine and load,
and the figures as JSON on the last line.

    python tests/benchmarks/audit_throughput.py                 # 200,000 events
    python tests/benchmarks/audit_throughput.py --count 50000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import asyncpg
from prometheus_client import CollectorRegistry

from processors.audit.processor import AuditProcessor
from processors.audit.verify import verify
from streams.config_siem import AuditConfig
from streams.jetstream import connect, delete_streams, ensure_streams
from streams.topology import Topology
from tests.benchmarks.projection_throughput import _load, generate, machine


async def main(args: argparse.Namespace) -> None:
    prefix = f"BENCH{uuid.uuid4().hex[:6]}".upper()
    topology = Topology(prefix=prefix)
    dbname = f"nexus_bench_audit_{prefix.lower()}"
    admin = await asyncpg.connect(args.pg_admin_dsn)
    nc = await connect(args.nats_url, name="audit-bench")
    js = nc.jetstream()
    figures: dict[str, Any] = {"machine": machine()}
    try:
        await ensure_streams(js, topology)
        print(f"machine: {figures['machine']}; load average {_load()}")
        last, _ = await generate(nc, topology, args.count)
        await admin.execute(f'CREATE DATABASE "{dbname}"')
        dsn = f"{args.pg_admin_dsn.rpartition('/')[0]}/{dbname}"
        config = AuditConfig(batch_size=args.batch_size) if args.batch_size else AuditConfig()
        proc = AuditProcessor(nc, dsn, topology, config=config, registry=CollectorRegistry())
        print(f"load average before: {_load()}; audit batch size {config.batch_size}", flush=True)
        started, cpu = time.perf_counter(), time.process_time()
        await proc.start()
        try:
            await proc.wait_for(topology.traffic_stream, last)
        finally:
            await proc.stop()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        print(
            f"audit:    {last:,} records in {wall:.2f} s = {last / wall:,.0f} records/s "
            f"(process used {cpu / wall:.0%} of a core: {last / cpu:,.0f} records per CPU-second; "
            f"load average after: {_load()})"
        )
        conn = await asyncpg.connect(dsn)
        try:
            started = time.perf_counter()
            report = await verify(conn)
            checked = time.perf_counter() - started
        finally:
            await conn.close()
        print(f"verify:   {report.describe() if hasattr(report, 'describe') else report} in {checked:.1f} s")
        figures.update(
            records=last,
            audit_records_per_s=round(last / wall),
            audit_records_per_cpu_s=round(last / cpu),
            batch_size=config.batch_size,
            load_average_after=_load(),
        )
        print(json.dumps(figures))
    finally:
        await delete_streams(js, topology)
        await admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        await admin.close()
        await nc.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=200_000, help="events to publish (default 200,000)")
    parser.add_argument("--batch-size", type=int, default=0, help="audit batch size (default: the config's)")
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    parser.add_argument("--pg-admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    asyncio.run(main(parser.parse_args()))
