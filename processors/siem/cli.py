"""``nexus siem``: run the SIEM forwarder for the sinks of a config file.

    nexus siem --config FILE [--nats URL] [--prefix NEXUS] [--metrics-port N]

Exit codes: 0 stopped by a signal, 2 bad config or a service error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys

from prometheus_client import start_http_server

from processors.siem.forwarder import SiemForwarder
from streams.config import ConfigError, NexusConfig, parse_config
from streams.jetstream import connect, ensure_streams
from streams.topology import Topology


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nexus siem", description="forward events to SIEM sinks")
    p.add_argument(
        "--config", default=os.environ.get("NEXUS_CONFIG"), help="nexus config file (siem: section)"
    )
    p.add_argument("--nats", default=os.environ.get("NEXUS_NATS_URL", "nats://127.0.0.1:4222"))
    p.add_argument("--prefix", default=os.environ.get("NEXUS_STREAM_PREFIX", "NEXUS"))
    p.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus /metrics on this port")
    return p


async def _run(args: argparse.Namespace, cfg: NexusConfig) -> int:
    if not any(s.enabled for s in cfg.siem.sinks):
        print("nexus siem: the config has no enabled sink (siem.sinks)", file=sys.stderr)
        return 2
    topology = Topology(prefix=args.prefix)
    nc = await connect(args.nats, name="nexus-siem")
    try:
        js = nc.jetstream()
        await ensure_streams(js, topology)
        forwarder = SiemForwarder(js, topology, cfg.siem)
        await forwarder.start()
        if args.metrics_port:
            start_http_server(args.metrics_port, addr="127.0.0.1")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(
            f"nexus siem: forwarding to {', '.join(s.name for s in cfg.siem.sinks if s.enabled)}", flush=True
        )
        await stop.wait()
        await forwarder.stop()
        return 0
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if not args.config:
        print("nexus siem: --config (or NEXUS_CONFIG) is required", file=sys.stderr)
        return 2
    try:
        with open(args.config, "rb") as f:
            cfg = parse_config(f.read(), source=args.config)
        return asyncio.run(_run(args, cfg))
    except ConfigError as exc:
        print(f"nexus siem: {exc}", file=sys.stderr)
    except OSError as exc:
        print(f"nexus siem: {exc.strerror or exc}", file=sys.stderr)
    return 2
