"""``nexus alerts``: run the alerts worker; rebuild its delivery log.

    nexus alerts (--config FILE | --hub) [--nats URL] [--stream-prefix P] [--dsn DSN]
                 [--data-dir DIR] [--metrics-port N]
    nexus alerts replay --dsn DSN [--nats URL] [--stream-prefix P]
    nexus alerts test --config FILE --channel NAME

``test`` sends one test alert through a configured channel, now, with the
secrets of this environment (no NATS, no dedup, no rate limit), and says
what the receiver answered: the way to check a channel before an incident.

``--config`` reads the ``alerts:`` section of a file (SIGHUP reads it
again, and the channels' secrets: a rotated secret file); ``--hub``
follows the Hub's snapshots (the ``alerts`` settings section), applying
each while running.  ``--dsn`` (NEXUS_POSTGRES_DSN)
keeps the delivery log in Postgres.

Exit codes: 0 stopped by a signal, 2 bad flags, config or a service error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

import asyncpg
import nats.errors
from prometheus_client import start_http_server

from streams.config_alerts import AlertsConfig, Channel
from streams.config_base import ConfigError
from streams.config_validation import parse_config
from streams.events import Node
from streams.events_alerts import AlertRaised
from streams.settings import from_flags
from streams.topology import Topology

log = logging.getLogger("nexus.alerts")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nexus alerts", description="run the alerts worker")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--config", default=None, help="config file with an alerts: section (NEXUS_CONFIG)")
    src.add_argument("--hub", action="store_true", help="follow the Hub's snapshots (over NATS)")
    p.add_argument("--nats", default=None, help="(NEXUS_NATS_URL)")
    p.add_argument("--stream-prefix", default=None, help="(NEXUS_STREAM_PREFIX)")
    p.add_argument("--dsn", default=None, help="Postgres for the delivery log (NEXUS_POSTGRES_DSN)")
    p.add_argument(
        "--data-dir", default=None, help="where the Hub's last snapshot is cached (NEXUS_DATA_DIR)"
    )
    p.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus /metrics on this port")
    return p


def _replay_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nexus alerts replay", description="drop the delivery log and rebuild it from the traffic stream"
    )
    p.add_argument("--nats", default=None, help="(NEXUS_NATS_URL)")
    p.add_argument("--stream-prefix", default=None, help="(NEXUS_STREAM_PREFIX)")
    p.add_argument("--dsn", default=None, help="(NEXUS_POSTGRES_DSN)")
    return p


def _load(path: str) -> AlertsConfig:
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_config(text, source=path).alerts


async def _run(args: argparse.Namespace) -> int:
    from processors.alerts.embed import start_alerts

    topology = Topology(prefix=args.stream_prefix)
    config = _load(args.config) if args.config else AlertsConfig()
    worker, stop_worker = await start_alerts(args.nats, topology, config, postgres_dsn=args.dsn or None)
    stop_follow = None
    try:
        loop = asyncio.get_running_loop()
        if args.hub:
            from streams.snapshots import Snapshot, SnapshotFollower

            async def on_snapshot(snap: Snapshot) -> None:
                await worker.follow(snap.config.alerts)

            follower = SnapshotFollower(
                args.nats,
                topology,
                node_kind="processor",
                node_id=worker.node.id,
                apply=on_snapshot,
                cache_path=Path(args.data_dir) / "snapshot-alerts.json",
            )
            await follower.start()
            stop_follow = follower.stop
        elif args.config:
            path = args.config

            rereads: set[asyncio.Task[None]] = set()

            def reread() -> None:
                async def apply() -> None:
                    try:
                        await worker.set_config(_load(path), reread_secrets=True)
                    except ConfigError as exc:
                        log.error("alerts: %s (keeping the configuration in use)", exc)

                task = loop.create_task(apply())
                rereads.add(task)
                task.add_done_callback(rereads.discard)

            loop.add_signal_handler(signal.SIGHUP, reread)
        if args.metrics_port:
            start_http_server(args.metrics_port, addr="127.0.0.1")
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        source = "the Hub's snapshots" if args.hub else args.config
        print(f"nexus alerts: running ({source}; {len(worker.config.rules)} rules)", flush=True)
        await stop.wait()
        return 0
    finally:
        if stop_follow is not None:
            with contextlib.suppress(Exception):
                await stop_follow()
        await stop_worker()


def _replay(argv: list[str]) -> int:
    from processors.alerts.log import replay

    args = _replay_parser().parse_args(argv)
    try:
        from_flags(args, nats="nats_url", stream_prefix="stream_prefix", dsn="postgres_dsn")
        if not args.dsn:
            raise ConfigError("--dsn (or NEXUS_POSTGRES_DSN) is required")
        report = asyncio.run(replay(args.dsn, args.nats, Topology(prefix=args.stream_prefix)))
    except ConfigError as exc:
        print(f"nexus alerts replay: {exc}", file=sys.stderr)
        return 2
    except (OSError, nats.errors.Error, asyncpg.PostgresError) as exc:
        print(f"nexus alerts replay: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(f"delivery log rebuilt: {report.events} alert events up to seq {report.last_seq}")
    return 0


def _test_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nexus alerts test", description="send a test alert through one channel")
    p.add_argument("--config", default=None, help="config file with an alerts: section (NEXUS_CONFIG)")
    p.add_argument("--channel", required=True, help="the channel's name")
    return p


async def _send_test(channel: Channel) -> int:
    from processors.alerts.channels import build
    from processors.alerts.worker import default_node_id

    client = build(channel, os.environ)
    alert = AlertRaised(
        node=Node(kind="processor", id=default_node_id()),
        rule="test",
        rule_kind="test",
        subject=f"channel/{channel.name}",
        dedup_key=f"test|{channel.name}",
        severity="info",
        title=f"Test alert for channel {channel.name}",
        summary="Sent by `nexus alerts test`: if you can read this, the channel works.",
    )
    try:
        out = await client.send(alert)
    finally:
        await client.close()
    status = f" ({out.status_code})" if out.status_code else ""
    if out.ok:
        print(f"delivered to {channel.name}{status}: alert {alert.id}")
        return 0
    print(f"not delivered to {channel.name}{status}: {out.reason}", file=sys.stderr)
    return 1


def _test(argv: list[str]) -> int:
    args = _test_parser().parse_args(argv)
    try:
        from_flags(args, config="config")
        if not args.config:
            raise ConfigError("--config FILE (or NEXUS_CONFIG) is required")
        channels = {c.name: c for c in _load(args.config).channels}
        if args.channel not in channels:
            known = ", ".join(sorted(channels)) or "none"
            raise ConfigError(f"no channel named {args.channel!r} in {args.config} (channels: {known})")
        return asyncio.run(_send_test(channels[args.channel]))
    except ConfigError as exc:
        print(f"nexus alerts test: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str]) -> int:
    if argv[:1] == ["replay"]:
        return _replay(argv[1:])
    if argv[:1] == ["test"]:
        return _test(argv[1:])
    args = _parser().parse_args(argv)
    try:
        settings = from_flags(
            args,
            config="config",
            nats="nats_url",
            stream_prefix="stream_prefix",
            dsn="postgres_dsn",
            data_dir="data_dir",
        )
        logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
        if args.hub:
            args.config = None  # NEXUS_CONFIG does not apply when following the Hub
        elif not args.config:
            raise ConfigError("--config FILE (or NEXUS_CONFIG) or --hub is required")
        return asyncio.run(_run(args))
    except ConfigError as exc:
        print(f"nexus alerts: {exc}", file=sys.stderr)
    except (OSError, nats.errors.Error, asyncpg.PostgresError) as exc:
        print(f"nexus alerts: cannot reach a service: {type(exc).__name__}: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return 2
