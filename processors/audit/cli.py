"""``nexus audit``: run the audit processor, verify the chain, purge bodies.

    nexus audit verify [--dsn DSN] [--from N] [--to N] [--publish [--nats URL] [--prefix NEXUS]]
    nexus audit run    [--config FILE] [--nats URL] [--dsn DSN] [--prefix NEXUS]
    nexus audit purge  [--config FILE] [--nats URL] [--dsn DSN] [--prefix NEXUS]

``verify --publish`` also publishes the result as an ``audit.verified``
event on the traffic stream, where the alerts worker's ``audit_chain`` rule
watches for a break (run it on a schedule: cron, a systemd timer).

Exit codes: 0 ok, 1 the chain is broken, 2 bad usage or a service error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import signal
import sys

import asyncpg
import nats.errors
from prometheus_client import start_http_server

from processors.audit.processor import AuditProcessor
from processors.audit.verify import VerifyResult, verify
from streams import codec, retention
from streams.config import NexusConfig
from streams.config_base import ConfigError
from streams.config_validation import parse_config
from streams.events import Node
from streams.events_alerts import AuditVerified
from streams.jetstream import connect, ensure_streams
from streams.settings import from_flags
from streams.topology import Topology


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nexus audit", description="the tamper-evident audit trail")
    sub = p.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dsn", default=None, help="Postgres DSN (NEXUS_POSTGRES_DSN)")
    v = sub.add_parser("verify", parents=[common], help="check the hash chain over a range of records")
    v.add_argument("--from", dest="from_n", type=int, default=1, help="first record number (default 1)")
    v.add_argument("--to", dest="to_n", type=int, default=None, help="last record number (default: head)")
    v.add_argument(
        "--publish", action="store_true", help="publish the result as an audit.verified event (for alerts)"
    )
    v.add_argument("--nats", default=None, help="(NEXUS_NATS_URL; with --publish)")
    v.add_argument("--prefix", default=None, help="(NEXUS_STREAM_PREFIX; with --publish)")
    for name, help_ in (("run", "run the audit processor"), ("purge", "apply the body retention policy")):
        r = sub.add_parser(name, parents=[common], help=help_)
        r.add_argument("--config", default=None, help="nexus config file (NEXUS_CONFIG)")
        r.add_argument("--nats", default=None, help="(NEXUS_NATS_URL)")
        r.add_argument("--prefix", default=None, help="(NEXUS_STREAM_PREFIX)")
        if name == "run":
            r.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus /metrics here")
    return p


def _load(path: str | None) -> NexusConfig:
    if not path:
        return NexusConfig()
    with open(path, "rb") as f:
        return parse_config(f.read(), source=path)


async def _verify(
    dsn: str, from_n: int, to_n: int | None, *, publish_to: Topology | None = None, nats_url: str = ""
) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        result = await verify(conn, from_n=from_n, to_n=to_n)
    finally:
        await conn.close()
    print(result.describe())
    if publish_to is not None:
        await _publish(result, publish_to, nats_url)
    return 0 if result.ok else 1


async def _publish(result: VerifyResult, topology: Topology, nats_url: str) -> None:
    brk = result.broken
    event = AuditVerified(
        node=Node(kind="processor", id="audit-verify"),
        ok=result.ok,
        first_n=result.first_n,
        last_n=result.last_n,
        checked=result.checked,
        head_n=result.head_n,
        broken_n=brk.n if brk else 0,
        broken_event_id=brk.event_id if brk else "",
        reason=brk.reason if brk else "",
    )
    nc = await connect(nats_url, name="nexus-audit-verify", max_reconnect_attempts=2)
    try:
        js = nc.jetstream()
        await ensure_streams(js, topology)
        await js.publish(topology.subject_for(event), codec.encode(event), headers={"Nats-Msg-Id": event.id})
    finally:
        await nc.close()
    print(f"published audit.verified ({'ok' if result.ok else 'broken'}) as event {event.id}")


async def _purge(args: argparse.Namespace, cfg: NexusConfig) -> int:
    # Retention only: no consumer, no writer claim (that would fence the
    # running processor).
    topology = Topology(prefix=args.prefix)
    nc = await connect(args.nats, name="nexus-audit-purge")
    pool = await asyncpg.create_pool(args.dsn, min_size=1, max_size=2)
    try:
        bodies = await retention.purge_bodies(pool, older_than_days=cfg.audit.body_retention_days)
        spilled = await retention.purge_spill(
            nc.jetstream(),
            topology.spill_bucket,
            older_than=dt.timedelta(days=cfg.audit.spill_retention_days),
        )
    finally:
        await pool.close()
        with contextlib.suppress(Exception):
            await nc.close()
    print(f"purged {bodies} stored bodies and {spilled} spilled objects")
    return 0


async def _run(args: argparse.Namespace, cfg: NexusConfig) -> int:
    if not cfg.audit.enabled:
        print("nexus audit: disabled by the config (audit.enabled: false)")
        return 0
    topology = Topology(prefix=args.prefix)
    nc = await connect(args.nats, name="nexus-audit")
    try:
        js = nc.jetstream()
        await ensure_streams(js, topology)
        proc = AuditProcessor(nc, args.dsn, topology, config=cfg.audit)
        await proc.start()
        if args.metrics_port:
            start_http_server(args.metrics_port, addr="127.0.0.1")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"nexus audit: recording {', '.join(s.name for s in topology.streams())}", flush=True)
        await stop.wait()
        await proc.stop()
        return 0
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        from_flags(args, dsn="postgres_dsn", config="config", nats="nats_url", prefix="stream_prefix")
    except ConfigError as exc:
        print(f"nexus audit: {exc}", file=sys.stderr)
        return 2
    if not args.dsn:
        print("nexus audit: no Postgres DSN (use --dsn or NEXUS_POSTGRES_DSN)", file=sys.stderr)
        return 2
    try:
        if args.cmd == "verify":
            topology = Topology(prefix=args.prefix) if args.publish else None
            return asyncio.run(
                _verify(args.dsn, args.from_n, args.to_n, publish_to=topology, nats_url=args.nats)
            )
        cfg = _load(args.config)
        if args.cmd == "purge":
            return asyncio.run(_purge(args, cfg))
        return asyncio.run(_run(args, cfg))
    except ConfigError as exc:
        print(f"nexus audit: {exc}", file=sys.stderr)
    except (OSError, asyncpg.PostgresError, nats.errors.Error) as exc:
        print(f"nexus audit: cannot reach a service: {exc}", file=sys.stderr)
    return 2
