"""``nexus hub ...`` and ``nexus replay hub``.

    nexus hub run [--nats URL] [--prefix NEXUS] [--dsn DSN] [--port 3060] [--data-dir DIR]
                  [--admin-email E] [--import FILE]
    nexus hub import FILE [--dry-run] [--prune] [--url URL]
    nexus hub export [-o FILE] [--url URL]
    nexus replay hub [--nats URL] [--prefix NEXUS] [--dsn DSN]

``import`` and ``export`` go through the admin API as the signed-in user
(``nexus admin login``): the same IAM and audit as any change.

Exit codes: 0 ok, 1 a service error or a refusal, 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import signal
import sys
import time
from pathlib import Path

import asyncpg
import nats
import nats.errors

from hub import readmodel
from hub.agents.ca import CaError
from hub.jobs import history as job_history
from hub.state import HubState, fold
from hub.store import ConfigStore
from streams.config_base import ConfigError
from streams.probe import Prober
from streams.settings import from_flags
from streams.topology import Topology
from streams.vault.master import MasterKeyError


def _services(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nats", default=None, help="(NEXUS_NATS_URL)")
    p.add_argument("--prefix", default=None, help="(NEXUS_STREAM_PREFIX)")
    p.add_argument("--dsn", default=None, help="Postgres DSN (NEXUS_POSTGRES_DSN)")


async def read_state(js: nats.js.JetStreamContext, topology: Topology) -> HubState:
    """The fold of the whole CONFIG stream (as of now)."""
    store = ConfigStore(js, topology)
    if not await store.exists():
        return HubState()
    last = await store.last_seq()
    events = [item async for item in store.read(1, until=last)] if last else []
    return await asyncio.to_thread(fold, HubState(), events)


async def _replay(args: argparse.Namespace) -> int:
    topology = Topology(prefix=args.prefix)
    nc = await nats.connect(args.nats, name="nexus-replay-hub", max_reconnect_attempts=3, connect_timeout=2)
    try:
        started = time.monotonic()
        state = await read_state(nc.jetstream(), topology)
        conn = await asyncpg.connect(args.dsn)
        try:
            written = await readmodel.rebuild(conn, state, topology.config_stream)
            runs = await job_history.rebuild(conn, nc.jetstream(), topology)
        finally:
            await conn.close()
    finally:
        await nc.close()
    items = sum(len(t) for t in state.items.values())
    print(f"hub: rebuilt {items} items ({written} rows) up to CONFIG sequence {state.seq}")
    print(f"hub: rebuilt the history of {runs} job runs")
    if state.skipped:
        print(f"hub: {state.skipped} events were not applicable and skipped (see the log)", file=sys.stderr)
    print(f"replay took {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


def replay_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="nexus replay hub",
        description="Rebuild the Hub's Postgres read model from the CONFIG stream (and the job run "
        "history from the ADMIN stream).",
    )
    _services(parser)
    args = parser.parse_args(argv)
    try:
        from_flags(args, nats="nats_url", prefix="stream_prefix", dsn="postgres_dsn")
    except ConfigError as exc:
        print(f"nexus replay hub: {exc}", file=sys.stderr)
        return 2
    if not args.dsn:
        print("nexus replay hub: no Postgres DSN (use --dsn or NEXUS_POSTGRES_DSN)", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_replay(args))
    except (OSError, asyncpg.PostgresError, nats.errors.Error) as exc:
        print(f"nexus replay hub: cannot reach a service: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


# --- nexus hub ------------------------------------------------------------------------


def _run_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    r = sub.add_parser("run", help="run the Hub (admin API, control state, snapshots)")
    _services(r)
    r.add_argument("--host", default=None, help="(NEXUS_HUB_HOST; default 127.0.0.1)")
    r.add_argument("--port", type=int, default=None, help="(NEXUS_HUB_PORT; default 3060)")
    r.add_argument("--data-dir", default=None, help="(NEXUS_DATA_DIR)")
    r.add_argument("--node-id", default="hub")
    r.add_argument(
        "--admin-email",
        default=None,
        help="the first admin, created with a one-time password when the Hub has no user (NEXUS_ADMIN_EMAIL)",
    )
    r.add_argument(
        "--import", dest="import_file", default=None, help="a config file to import on a first start"
    )
    r.add_argument(
        "--agent-ca-cert",
        default=None,
        help="the agent CA's certificate (PEM); default: one generated into <data-dir>/agent-ca",
    )
    r.add_argument("--agent-ca-key", default=None, help="the agent CA's private key (PEM, mode 0600)")
    r.add_argument("--tls-cert", default=None, help="serve the admin API over TLS: certificate chain (PEM)")
    r.add_argument("--tls-key", default=None, help="the TLS private key (PEM)")
    r.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        help="a reverse proxy (CIDR) whose X-Forwarded-For/-Proto are believed; repeat for more",
    )


async def _serve(args: argparse.Namespace, prober: Prober | None = None) -> int:
    from hub.service import HubServer, HubSettings
    from streams.config_validation import parse_config

    for cidr in args.trusted_proxy:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            print(f"nexus hub: --trusted-proxy {cidr!r} is not an address or CIDR", file=sys.stderr)
            return 2
    settings = HubSettings(
        nats_url=args.nats,
        topology=Topology(prefix=args.prefix),
        data_dir=Path(args.data_dir),
        postgres_dsn=args.dsn,
        host=args.host,
        port=args.port,
        node_id=args.node_id,
        tls_cert=Path(args.tls_cert) if args.tls_cert else None,
        agent_ca_cert=Path(args.agent_ca_cert) if args.agent_ca_cert else None,
        agent_ca_key=Path(args.agent_ca_key) if args.agent_ca_key else None,
        tls_key=Path(args.tls_key) if args.tls_key else None,
        trusted_proxies=tuple(args.trusted_proxy),
    )
    if (args.agent_ca_cert is None) != (args.agent_ca_key is None):
        print("nexus hub: give --agent-ca-cert and --agent-ca-key together", file=sys.stderr)
        return 2
    server = HubServer(settings, prober=prober)
    try:
        await server.start()
    except (CaError, MasterKeyError) as exc:  # checked before anything connects
        print(f"nexus hub: {exc}", file=sys.stderr)
        return 2
    try:
        assert server.control is not None
        if args.import_text is not None:
            cfg = parse_config(args.import_text, source=args.import_file)
            # A first start only: a sequence check raced with the Hub's own
            # first event (its self-enrolment) and skipped the import.
            n = await server.import_on_first_start(cfg)
            if n is not None:
                print(f"nexus hub: imported {args.import_file} ({n} changes)", flush=True)
            else:
                print(
                    f"nexus hub: holds a configuration already; {args.import_file} not imported", flush=True
                )
        password = await server.bootstrap_admin(args.admin_email)
        print(
            f"nexus hub: admin API on {server.url} (CONFIG sequence {server.control.state.seq})", flush=True
        )
        if password is not None:
            print(
                f"  first admin   {args.admin_email}\n  password      {password}   (shown once)", flush=True
            )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await server.stop()
    return 0


async def _import(args: argparse.Namespace) -> int:
    from hub.client import HubClient, resolve

    url, token = resolve(args.url)
    raw: bytes = args.raw
    query = f"?dry_run={'true' if args.dry_run else 'false'}&prune={'true' if args.prune else 'false'}"
    async with HubClient(url, token) as c:
        result = await c.request(
            "POST", f"/api/admin/config/import{query}", raw=raw, content_type="application/yaml"
        )
    for line in result["changes"]:
        print(line)
    if not result["changes"]:
        print("nothing to change: the Hub already holds this file")
    elif args.dry_run:
        print(f"(dry run: {len(result['changes'])} changes not applied)")
    else:
        print(f"{result['applied']} changes applied")
    return 0


async def _export(args: argparse.Namespace) -> str:
    from hub.client import HubClient, resolve

    url, token = resolve(args.url)
    async with HubClient(url, token) as c:
        text: str = await c.get("/api/admin/config/export")
    return text


def main(argv: list[str], *, prober: Prober | None = None) -> int:
    """``prober``: the provider probe the composition root hands in
    (``nexus hub`` runs through ``nexus.hub_cmd``)."""
    from hub.client import HubError

    parser = argparse.ArgumentParser(prog="nexus hub", description="the Hub: control plane and admin API")
    sub = parser.add_subparsers(dest="cmd", required=True)
    _run_parser(sub)
    imp = sub.add_parser("import", help="bring the Hub to a config file (a diff; --dry-run shows it)")
    imp.add_argument("file")
    imp.add_argument("--dry-run", action="store_true")
    imp.add_argument("--prune", action="store_true", help="delete what the file does not hold")
    imp.add_argument("--url", default=None)
    exp = sub.add_parser("export", help="write the Hub's state as a config file")
    exp.add_argument("-o", "--output", default="-")
    exp.add_argument("--url", default=None)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "run":
            settings = from_flags(
                args,
                nats="nats_url",
                prefix="stream_prefix",
                dsn="postgres_dsn",
                host="hub_host",
                port="hub_port",
                data_dir="data_dir",
                admin_email="admin_email",
            )
            logging.basicConfig(
                level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
            )
            args.import_text = Path(args.import_file).read_bytes() if args.import_file else None
            import uvloop

            return uvloop.run(_serve(args, prober))
        if args.cmd == "import":
            args.raw = Path(args.file).read_bytes()
            return asyncio.run(_import(args))
        text = asyncio.run(_export(args))
        if args.output and args.output != "-":
            Path(args.output).write_text(text)
            print(f"wrote {args.output}", file=sys.stderr)
        else:
            sys.stdout.write(text)
        return 0
    except (HubError, ConfigError) as exc:
        print(f"nexus hub {args.cmd}: {exc}", file=sys.stderr)
        return 1
    except (OSError, asyncpg.PostgresError, nats.errors.Error) as exc:
        print(f"nexus hub {args.cmd}: cannot reach a service: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
