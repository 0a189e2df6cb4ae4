"""``nexus siem``: run the SIEM forwarder for the sinks of a config file.

    nexus siem --config FILE [--nats URL] [--prefix NEXUS] [--metrics-port N]
    nexus siem dlq [--sink NAME] [--replay] [--nats URL] [--prefix NEXUS]

Exit codes: 0 stopped by a signal, 2 bad config or a service error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from prometheus_client import start_http_server

from processors.siem.forwarder import SiemForwarder, consumer_name
from streams import deadletter
from streams.config import NexusConfig
from streams.config_base import ConfigError
from streams.config_validation import parse_config
from streams.jetstream import connect, ensure_streams
from streams.settings import from_flags
from streams.topology import Topology


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nexus siem", description="forward events to SIEM sinks")
    p.add_argument("--config", default=None, help="nexus config file (siem: section; NEXUS_CONFIG)")
    p.add_argument("--nats", default=None, help="(NEXUS_NATS_URL)")
    p.add_argument("--prefix", default=None, help="(NEXUS_STREAM_PREFIX)")
    p.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus /metrics on this port")
    return p


async def _run(args: argparse.Namespace, cfg: NexusConfig) -> int:
    if not any(s.enabled for s in cfg.siem.sinks):
        print("nexus siem: the config has no enabled sink (siem.sinks)", file=sys.stderr)
        return 2
    topology = Topology(prefix=args.prefix)
    nc = await connect(args.nats, name="nexus-siem")
    try:
        await ensure_streams(nc.jetstream(), topology)
        forwarder = SiemForwarder(nc, topology, cfg.siem)
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


def _dlq_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nexus siem dlq",
        description="the SIEM sinks' dead letters (nexus deadletters --consumer siem_<sink> does the same)",
    )
    p.add_argument("--config", default=None, help="(not needed; accepted)")
    p.add_argument("--nats", default=None, help="(NEXUS_NATS_URL)")
    p.add_argument("--prefix", default=None, help="(NEXUS_STREAM_PREFIX)")
    p.add_argument("--sink", default=None, help="only this sink")
    p.add_argument(
        "--replay",
        action="store_true",
        help="send them back on their stream for their sink (the running forwarder delivers them)",
    )
    return p


async def _dlq(args: argparse.Namespace) -> int:
    topology = Topology(prefix=args.prefix)
    nc = await connect(args.nats, name="nexus-siem-dlq", max_reconnect_attempts=2)
    try:
        js = nc.jetstream()
        wanted = consumer_name(args.sink) if args.sink else None
        letters = [
            d
            for d in await deadletter.entries(js, topology, consumer=wanted)
            if d.consumer.startswith("siem_")
        ]
        if not args.replay:
            for dl in letters:
                print(
                    f"{dl.dlq_seq}\t{dl.consumer.removeprefix('siem_')}\t{dl.stream}:{dl.stream_seq}\t"
                    f"event {dl.event_id}\t{dl.code}\t{dl.reason}"
                )
            return 0
        sent, failed = await deadletter.redrive(js, topology, letters)
        for dl, why in failed:
            print(f"{dl.dlq_seq}: not re-driven: {why}", file=sys.stderr)
        print(f"{len(sent)} re-driven to their sinks, {len(failed)} not")
        return 1 if failed else 0
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


def main(argv: list[str]) -> int:
    if argv[:1] == ["dlq"]:
        dargs = _dlq_parser().parse_args(argv[1:])
        try:
            from_flags(dargs, nats="nats_url", prefix="stream_prefix")
        except ConfigError as exc:
            print(f"nexus siem dlq: {exc}", file=sys.stderr)
            return 2
        try:
            return asyncio.run(_dlq(dargs))
        except OSError as exc:
            print(
                f"nexus siem dlq: cannot reach NATS at {dargs.nats}: {exc.strerror or exc}", file=sys.stderr
            )
        return 2
    args = _parser().parse_args(argv)
    try:
        from_flags(args, config="config", nats="nats_url", prefix="stream_prefix")
    except ConfigError as exc:
        print(f"nexus siem: {exc}", file=sys.stderr)
        return 2
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
