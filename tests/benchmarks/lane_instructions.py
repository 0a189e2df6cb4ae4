"""Benchmark: the projection lane's CPU per event, counted in instructions.

    python tests/benchmarks/lane_instructions.py [--requests 20000] [--store null|postgres] [--repo DIR]

``projection_throughput.py`` times the projector in events/s, which moves
with whatever else the machine runs.  This counts instructions instead:
the traffic of ``--requests`` requests (four events each) is published to a
fresh stream first, then a child process runs one lane from sequence 1 to
the end under valgrind's callgrind, with instrumentation switched on only
for the catch-up (connection, imports and start-up are not counted).

``--store null`` gives the lane a store that folds nothing more and writes
nothing: the figure is the reader, the decoder and the fold the lane does
once per batch, i.e. what the NATS wire core and the consumer helper cost.
``--store postgres`` adds the Postgres store's COPY encoding (the database
works in its own process, which is not counted).

``--repo`` runs the child against another checkout of the code (say, the
commit before a change) with this same script, so two trees compare exactly
in one run:

    git archive <commit> | tar -x -C /tmp/base
    python tests/benchmarks/lane_instructions.py --repo /tmp/base

Needs valgrind, NATS on 127.0.0.1:4222 (and Postgres on 5432 for
``--store postgres``).  Prints one JSON line per tree.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    sys.path.insert(0, {repo!r})
    from projections.lane import Lane
    from streams.jetstream import connect
    from streams.topology import Topology

    class NullStore:
        name = "null"
        def __init__(self): self.seq = 0
        async def open(self): pass
        async def close(self): pass
        async def position(self, stream): return self.seq
        async def apply(self, stream, items, last_seq):
            self.seq = last_seq
            return len(items)
        async def reset(self): pass
        async def rows(self): return []

    async def main():
        nc = await connect({nats!r}, name="lane-instructions")
        if {store!r} == "postgres":
            from projections.pg_store import PostgresStore
            store = PostgresStore({dsn!r})
        else:
            store = NullStore()
        await store.open()
        lane = Lane([store], nc, Topology(prefix={prefix!r}), batch_size=5000, fetch_timeout_s=0.05)
        print("ready", flush=True)
        sys.stdin.readline()  # the parent switches instrumentation on
        await lane.run(until={last})
        print("done", flush=True)
        sys.stdin.readline()  # ... and off again
        await store.close()
        await nc.close()

    asyncio.run(main())
    """
)


async def _publish(nats_url: str, prefix: str, requests: int) -> int:
    from streams.codec import encode
    from streams.jetstream import connect, ensure_streams
    from streams.topology import Topology
    from tests.projections.helpers import ok_request

    topology = Topology(prefix=prefix)
    nc = await connect(nats_url, name="lane-instructions-publish")
    try:
        js = nc.jetstream()
        await ensure_streams(js, topology)
        for start in range(0, requests, 1000):
            for i in range(start, min(start + 1000, requests)):
                for ev in ok_request(i):
                    await nc.publish(topology.subject_for(ev), encode(ev), headers={"Nats-Msg-Id": ev.id})
            await nc.flush()
        info = await js.stream_info(topology.traffic_stream)
        return int(info.state.last_seq)
    finally:
        await nc.close()


async def _drop(nats_url: str, prefix: str) -> None:
    from streams.jetstream import connect, delete_streams
    from streams.topology import Topology

    nc = await connect(nats_url, name="lane-instructions-drop")
    try:
        await delete_streams(nc.jetstream(), Topology(prefix=prefix))
    finally:
        await nc.close()


def _run_child(repo: Path, code: str, out_dir: Path) -> int:
    out = out_dir / f"callgrind.{uuid.uuid4().hex[:6]}.out"
    proc = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-c",
            code,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=repo,
    )
    assert proc.stdin is not None and proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise RuntimeError("the lane child did not start")
    subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True)
    proc.stdin.write("\n")
    proc.stdin.flush()
    if proc.stdout.readline().strip() != "done":
        proc.kill()
        raise RuntimeError("the lane child failed")
    subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True, capture_output=True)
    proc.stdin.write("\n")
    proc.stdin.flush()
    proc.wait(timeout=300)
    text = out.read_text(errors="replace")
    found = [int(v) for v in re.findall(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)]
    if not found:
        raise RuntimeError(f"no instruction total in {out}")
    return max(found)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--store", choices=["null", "postgres"], default="null")
    parser.add_argument("--repo", action="append", type=Path, help="another checkout to compare (repeatable)")
    parser.add_argument("--nats-url", default=os.environ.get("NEXUS_NATS_URL", "nats://127.0.0.1:4222"))
    parser.add_argument("--postgres-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    trees = [REPO, *(p.resolve() for p in args.repo or [])]
    dsn = args.postgres_dsn
    for tree in trees:
        prefix = f"LANEBENCH{uuid.uuid4().hex[:6]}".upper()
        db = ""
        try:
            last = asyncio.run(_publish(args.nats_url, prefix, args.requests))
            if args.store == "postgres":
                db, dsn = _fresh_db(args.postgres_dsn)
            code = _CHILD.format(
                repo=str(tree), nats=args.nats_url, store=args.store, dsn=dsn, prefix=prefix, last=last
            )
            with tempfile.TemporaryDirectory() as tmp:
                total = _run_child(tree, code, Path(tmp))
            print(
                json.dumps(
                    {
                        "tree": str(tree),
                        "store": args.store,
                        "events": last,
                        "instructions": total,
                        "per_event": round(total / last),
                    }
                ),
                flush=True,
            )
        finally:
            asyncio.run(_drop(args.nats_url, prefix))
            if db:
                _drop_db(args.postgres_dsn, db)
    return 0


def _fresh_db(admin: str) -> tuple[str, str]:
    import asyncpg

    name = f"lanebench_{uuid.uuid4().hex[:8]}"

    async def run() -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(run())
    return name, f"{admin.rpartition('/')[0]}/{name}"


def _drop_db(admin: str, name: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
