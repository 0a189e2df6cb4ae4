"""``nexus reconcile``: run the reconciler (requests that never end are
recorded as aborted, their quota reservations released).

    nexus reconcile [--nats URL] [--stream-prefix P] [--max-open-s S] [--lost-after-s S] [--metrics-port N]

Exit codes: 0 stopped by a signal, 2 bad flags or NATS unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

import nats.errors
from prometheus_client import start_http_server

from processors.reconcile.reconciler import Reconciler, ReconcileSettings
from streams.config_base import ConfigError
from streams.jetstream import connect, ensure_streams
from streams.settings import from_flags
from streams.topology import Topology


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nexus reconcile", description="record requests that never end as aborted"
    )
    p.add_argument("--nats", default=None, help="(NEXUS_NATS_URL)")
    p.add_argument("--stream-prefix", default=None, help="(NEXUS_STREAM_PREFIX)")
    p.add_argument(
        "--max-open-s", type=float, default=3600.0, help="abort after this long whatever (default 3600)"
    )
    p.add_argument(
        "--lost-after-s", type=float, default=30.0, help="a node silent this long is gone (default 30)"
    )
    p.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus /metrics on this port")
    return p


async def _run(args: argparse.Namespace) -> int:
    topology = Topology(prefix=args.stream_prefix)
    nc = await connect(args.nats, name="nexus-reconcile")
    try:
        await ensure_streams(nc.jetstream(), topology)
        reconciler = Reconciler(
            nc, topology, ReconcileSettings(max_open_s=args.max_open_s, lost_after_s=args.lost_after_s)
        )
        await reconciler.start()
        if args.metrics_port:
            start_http_server(args.metrics_port, addr="127.0.0.1")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"nexus reconcile: following {topology.traffic_stream}", flush=True)
        await stop.wait()
        await reconciler.stop()
        return 0
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        from_flags(args, nats="nats_url", stream_prefix="stream_prefix")
        if args.max_open_s <= 0 or args.lost_after_s <= 0:
            raise ConfigError("--max-open-s and --lost-after-s must be positive")
        return asyncio.run(_run(args))
    except ConfigError as exc:
        print(f"nexus reconcile: {exc}", file=sys.stderr)
    except (OSError, nats.errors.NoServersError) as exc:
        print(f"nexus reconcile: cannot reach NATS at {args.nats}: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return 2
