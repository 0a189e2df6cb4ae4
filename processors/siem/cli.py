"""``nexus siem``: run the SIEM forwarder for the sinks of a config file.

    nexus siem --config FILE [--nats URL] [--prefix NEXUS] [--metrics-port N]
    nexus siem dlq --config FILE [--sink NAME] [--replay] [--nats URL] [--prefix NEXUS]

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

from processors.siem.dlq import list_dead_letters, replay_dead_letters
from processors.siem.forwarder import SiemForwarder
from processors.siem.sinks import client_for
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


def _dlq_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nexus siem dlq", description="list or replay dead-lettered records")
    p.add_argument(
        "--config", default=os.environ.get("NEXUS_CONFIG"), help="config file with a siem: section"
    )
    p.add_argument("--nats", default=os.environ.get("NEXUS_NATS_URL", "nats://127.0.0.1:4222"))
    p.add_argument("--prefix", default=os.environ.get("NEXUS_STREAM_PREFIX", "NEXUS"))
    p.add_argument("--sink", default=None, help="only this sink")
    p.add_argument("--replay", action="store_true", help="send them again; delivered ones are removed")
    return p


async def _dlq(args: argparse.Namespace, cfg: NexusConfig) -> int:
    topology = Topology(prefix=args.prefix)
    sinks = {s.name: s for s in cfg.siem.sinks}
    if args.sink is not None and args.sink not in sinks:
        print(f"nexus siem dlq: no sink named {args.sink!r} in the config", file=sys.stderr)
        return 2
    nc = await connect(args.nats, name="nexus-siem-dlq")
    try:
        js = nc.jetstream()
        if not args.replay:
            for dl in await list_dead_letters(js, topology, args.sink):
                print(
                    f"{dl.dlq_seq}\t{dl.sink}\t{dl.stream}:{dl.stream_seq}\tevent {dl.event_id}\t"
                    f"attempts {dl.attempts}\t{dl.reason}"
                )
            return 0
        status = 0
        for name in (
            [args.sink] if args.sink else sorted({d.sink for d in await list_dead_letters(js, topology)})
        ):
            sink = sinks.get(name)
            if sink is None:
                print(f"{name}: not in the config; skipped", file=sys.stderr)
                continue
            client = client_for(sink, os.environ)
            try:
                delivered, refused = await replay_dead_letters(js, topology, sink, client)
            finally:
                await client.close()
            print(f"{name}: {delivered} delivered and removed, {refused} still refused")
            status = status or (1 if refused else 0)
        return status
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


def main(argv: list[str]) -> int:
    if argv[:1] == ["dlq"]:
        dargs = _dlq_parser().parse_args(argv[1:])
        if not dargs.config:
            print("nexus siem dlq: --config (or NEXUS_CONFIG) is required", file=sys.stderr)
            return 2
        try:
            with open(dargs.config, "rb") as f:
                dcfg = parse_config(f.read(), source=dargs.config)
            return asyncio.run(_dlq(dargs, dcfg))
        except ConfigError as exc:
            print(f"nexus siem dlq: {exc}", file=sys.stderr)
        except OSError as exc:
            print(f"nexus siem dlq: {exc.strerror or exc}", file=sys.stderr)
        return 2
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
