"""Throughput of the DuckDB projection with and without the analytics rollups.

    python -m tests.analytics.bench_rollups [--requests N] [--batch 2000]

Applies the same decoded traffic (about 6 events per request) in batches, as
the projector's lane does, to the base ``DuckDBStore`` and to
``AnalyticsDuckDBStore`` in fresh files, then refreshes every rollup, and
prints events/s (wall and per CPU-second: this machine may be shared) for
each and the refresh time.  No NATS: this isolates the
store; the lane's fetch costs the same for both.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from projections.analytics.store import AnalyticsDuckDBStore
from projections.duck_store import DuckDBStore
from streams.codec import decode, encode
from tests.analytics.traffic import generate


async def _run(store: DuckDBStore, items: list[tuple[int, object]], batch: int) -> tuple[float, float]:
    await store.open()
    cpu = time.process_time()
    started = time.perf_counter()
    for i in range(0, len(items), batch):
        chunk = items[i : i + batch]
        await store.apply("BENCH", chunk, chunk[-1][0])
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    if isinstance(store, AnalyticsDuckDBStore):
        t = time.perf_counter()
        refreshed = await store.refresh_now()
        print(f"  final refresh: {time.perf_counter() - t:.2f} s ({refreshed})")
    await store.close()
    return elapsed, cpu


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--batch", type=int, default=2000)
    args = parser.parse_args()
    t = time.perf_counter()
    events, _ = generate(args.requests, days=args.days, seed=1)
    items = [(i, decode(encode(e))) for i, e in enumerate(events, 1)]
    print(
        f"{len(items)} events for {args.requests} requests over {args.days} days "
        f"(generated in {time.perf_counter() - t:.1f} s), batches of {args.batch}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for cls in (DuckDBStore, AnalyticsDuckDBStore):
            # refresh_every_s=0 keeps the timer out of the measurement; the
            # final refresh is timed on its own.
            store = cls(Path(tmp) / f"{cls.__name__}.duckdb")
            if isinstance(store, AnalyticsDuckDBStore):
                store.refresh_every_s = 0
            elapsed, cpu = await _run(store, items, args.batch)
            print(
                f"{cls.__name__}: {elapsed:.2f} s, {len(items) / elapsed:,.0f} events/s, "
                f"{len(items) / cpu:,.0f} events per CPU-second"
            )


if __name__ == "__main__":
    asyncio.run(main())
