"""A Hub replica process for the failover test (must-show 5): the real
``HubServer`` on the given NATS and Postgres, started as ``nexus hub run``
starts it, plus one job, ``tick``, whose every run leaves a row in Postgres
(``ms5_tick``): the side effect the test counts to show no run happened
twice.

    python -m tests.hub.replica --nats URL --prefix P --dsn DSN --port N \
        --data-dir DIR --node-id hub-a [--import FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path

import asyncpg

from hub.jobs.registry import JobContext
from hub.service import HubServer, HubSettings
from streams.config_validation import parse_config
from streams.topology import Topology

TICK_TABLE = """CREATE TABLE IF NOT EXISTS ms5_tick (
    run_number bigint NOT NULL, run_id text NOT NULL, replica text NOT NULL, fence bigint NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp())"""


async def _main(args: argparse.Namespace) -> None:
    server = HubServer(
        HubSettings(
            nats_url=args.nats,
            topology=Topology(prefix=args.prefix),
            data_dir=Path(args.data_dir),
            postgres_dsn=args.dsn,
            port=args.port,
            node_id=args.node_id,
            jobs_tick_s=0.1,
        )
    )

    async def tick(ctx: JobContext) -> str:
        conn = await asyncpg.connect(args.dsn)
        try:
            await conn.execute(
                "INSERT INTO ms5_tick (run_number, run_id, replica, fence) VALUES ($1, $2, $3, $4)",
                ctx.number,
                ctx.run_id,
                args.node_id,
                ctx.fence,
            )
        finally:
            await conn.close()
        await asyncio.sleep(0.2)  # a run takes a while: a kill may land inside one
        return f"tick {ctx.number} by {args.node_id}"

    server.jobs.add("tick", every_s=0.5, run=tick, description="the failover test's counted side effect")
    await server.start()
    try:
        assert server.control is not None
        if args.import_file and server.control.state.seq == 0:
            cfg = parse_config(Path(args.import_file).read_bytes(), source=args.import_file)
            await server.import_config(cfg)
        password = await server.bootstrap_admin("ops@example.com")
        print(f"replica {args.node_id} admin API on {server.url}", flush=True)
        if password is not None:
            print(f"password {password}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await server.stop()


def main() -> None:
    p = argparse.ArgumentParser()
    for name in ("--nats", "--prefix", "--dsn", "--data-dir", "--node-id"):
        p.add_argument(name, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--import", dest="import_file", default=None)
    asyncio.run(_main(p.parse_args()))


if __name__ == "__main__":
    main()
