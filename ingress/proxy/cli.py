"""``nexus proxy``: the compliance proxy alone, against configured services.

    nexus proxy --config FILE [--port 3128] [--admin-port 3129] [--hub] [--advertise HOST[:PORT]]
    nexus proxy --hub [--port 3128] [--admin-port 3129]   # the Hub's configuration alone
    nexus proxy ca --out DIR            # a new CA (key 0600) for proxy.tls.cas
    nexus proxy hash-password           # a scrypt hash for proxy.auth.users

NATS comes from the settings' ``NEXUS_NATS_URL`` (events wait in the local
outbox while it is away); Valkey from ``NEXUS_VALKEY_URL`` holds the attestation nonces
shared by every node (without it, a node-local store).  With no CA in the
config, a development CA is made in the data directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from ingress.proxy.auth import hash_password
from ingress.proxy.certs import CaError, generate_ca
from streams.config_base import ConfigError
from streams.config_proxy import parse_proxy_address
from streams.config_snapshot import ConfigSnapshot, load_snapshot
from streams.events import Node
from streams.publisher import Publisher
from streams.settings import Settings, load_settings
from streams.topology import Topology

log = logging.getLogger("nexus.proxy")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nexus proxy", description="Run the Nexus compliance proxy.")
    p.add_argument(
        "--config", default=None, help="the Nexus config file (YAML); without it, --hub is required"
    )
    p.add_argument("--host", default=None, help="listen address (default: proxy.host)")
    p.add_argument("--port", type=int, default=None, help="listen port (default: proxy.port, 3128)")
    p.add_argument(
        "--admin-port", type=int, default=None, help="admin port (default: proxy.admin_port, 3129)"
    )
    p.add_argument(
        "--advertise",
        default=None,
        help=(
            "host[:port] clients use to reach this node, reported to the Hub for its PAC file "
            "(default: proxy.advertise, else the listen address, or the hostname on a wildcard one)"
        ),
    )
    p.add_argument("--node-id", default=None)
    p.add_argument(
        "--data-dir", default=None, help="where the event outbox and a development CA live (NEXUS_DATA_DIR)"
    )
    p.add_argument("--stream-prefix", default=None, help="(NEXUS_STREAM_PREFIX)")
    p.add_argument(
        "--hub",
        action="store_true",
        help=(
            "follow the Hub's snapshots (kill switch, interception, hooks): from the start without "
            "--config (waiting for the Hub's first, or this node's last one), after starting on it with"
        ),
    )
    return p


async def serve(
    snapshot: ConfigSnapshot | None, args: argparse.Namespace, node_id: str, settings: Settings
) -> None:
    """Run the proxy on ``snapshot`` (the config file's), or, with None, on
    the Hub's snapshots from the first."""
    from ingress.proxy.service import (
        HubFeed,
        ensure_dev_ca,
        hub_agent_keys,
        hub_users,
        open_spill,
        start_proxy,
    )

    data = settings.data_path
    topology = Topology(prefix=settings.stream_prefix)
    feed: HubFeed | None = None
    if snapshot is None:
        feed = HubFeed(settings.nats, topology, node_id=node_id, cache_path=data / f"snapshot-{node_id}.json")
        snapshot = await feed.first()
    snapshot = ensure_dev_ca(snapshot, data / "proxy-ca")
    publisher = Publisher(
        settings.nats,
        topology,
        data / f"outbox-proxy-{node_id}.sqlite",
        name=f"nexus-proxy-{node_id}",
        node=Node(kind="proxy", id=node_id),
    )
    await publisher.start()
    valkey: Any = None
    if settings.valkey_url:
        import valkey.asyncio as avalkey

        valkey = avalkey.from_url(settings.valkey_url)  # type: ignore[no-untyped-call]
    spill, spill_nc = await open_spill(settings.nats, topology, node_id)
    try:
        proxy = await start_proxy(
            snapshot,
            publisher,
            node_id=node_id,
            valkey=valkey,
            valkey_prefix=settings.valkey_prefix,
            host=args.host,
            port=args.port,
            admin_port=args.admin_port,
            spill=spill,
            advertise=args.advertise,
            # With the Hub: the agents it enrolled (and revoked) decide
            # attestation, not a keys file.
            agent_keys=hub_agent_keys(spill_nc, topology) if args.hub else None,
            # With the Hub: its users sign in with their own e-mail and password.
            hub_users=hub_users(spill_nc, topology, node_id) if args.hub else None,
        )
    except (RuntimeError, CaError) as exc:
        if feed is not None:
            await feed.follower.stop()
        await publisher.close()
        if spill_nc is not None:
            await spill_nc.close()
        raise SystemExit(f"nexus proxy: {exc}") from None
    proxy.dev_ca = data / "proxy-ca"
    if feed is not None:
        await feed.serving(proxy)
    elif args.hub:
        await proxy.follow(settings.nats, topology, cache_path=data / f"snapshot-{node_id}.json")
    print(
        f"nexus proxy listening on {proxy.proxy_url} (node {node_id}); "
        f"admin, PAC and CA on {proxy.admin_url}"
        + (f"; reported to the Hub as {proxy.advertise} (its /proxy.pac)" if args.hub else ""),
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await proxy.close()
        await publisher.close()
        if spill_nc is not None:
            await spill_nc.close()
        if valkey is not None:
            await valkey.aclose()


def ca_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="nexus proxy ca", description="Make a CA for proxy.tls.cas.")
    p.add_argument("--out", required=True, help="folder for ca.pem and ca-key.pem (0600)")
    p.add_argument("--name", default="Nexus proxy CA")
    args = p.parse_args(argv)
    out = Path(args.out)
    if (out / "ca-key.pem").exists():
        print(f"nexus proxy ca: {out / 'ca-key.pem'} exists; not overwriting it", file=sys.stderr)
        return 1
    generate_ca(out / "ca.pem", out / "ca-key.pem", name=args.name)
    print(f"{out / 'ca.pem'}\n{out / 'ca-key.pem'}")
    return 0


def hash_main(argv: list[str]) -> int:
    argparse.ArgumentParser(
        prog="nexus proxy hash-password", description="Read a password, print its scrypt hash."
    ).parse_args(argv)
    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        print("nexus proxy hash-password: at least 8 characters", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["ca"]:
        return ca_main(argv[1:])
    if argv[:1] == ["hash-password"]:
        return hash_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.config is None and not args.hub:
        print("nexus proxy: --config FILE, or --hub to run on the Hub's configuration", file=sys.stderr)
        return 2
    snapshot: ConfigSnapshot | None = None
    try:
        settings = load_settings({"data_dir": args.data_dir, "stream_prefix": args.stream_prefix})
        logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
        if args.config is not None:
            snapshot = load_snapshot(args.config)
        if args.advertise is not None:
            parse_proxy_address(args.advertise, where="--advertise")
    except ConfigError as exc:
        print(f"nexus proxy: {exc}", file=sys.stderr)
        return 2
    configured = snapshot.config.proxy.node_id if snapshot is not None else ""
    node_id = args.node_id or configured or f"proxy-{socket.gethostname()}"
    settings.data_path.mkdir(parents=True, exist_ok=True)
    import uvloop

    try:
        uvloop.run(serve(snapshot, args, node_id, settings))
    except CaError as exc:
        print(f"nexus proxy: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
