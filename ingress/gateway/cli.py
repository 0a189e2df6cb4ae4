"""``nexus gateway``: the gateway alone, against configured services.

NATS comes from ``NEXUS_NATS_URL`` (default nats://127.0.0.1:4222).  The
gateway starts even when NATS is down: events wait in the local outbox and
are published when it returns.
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

from ingress.gateway.app import create_app, default_node_id, start_gateway
from streams.config import ConfigError, ConfigSnapshot, load_snapshot
from streams.jetstream import connect, ensure_streams
from streams.publisher import Publisher
from streams.spill import SpillStore
from streams.topology import Topology

log = logging.getLogger("nexus.gateway")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nexus gateway", description="Run the Nexus API gateway.")
    p.add_argument("--config", required=True, help="the Nexus config file (YAML)")
    p.add_argument("--host", default=None, help="listen address (default: gateway.host in the config)")
    p.add_argument("--port", type=int, default=None, help="listen port (default: gateway.port in the config)")
    p.add_argument("--node-id", default=None)
    p.add_argument(
        "--data-dir",
        default=os.environ.get("NEXUS_DATA_DIR", str(Path.home() / ".nexus")),
        help="where the event outbox lives",
    )
    p.add_argument("--stream-prefix", default=os.environ.get("NEXUS_STREAM_PREFIX", "NEXUS"))
    return p


async def serve(
    snapshot: ConfigSnapshot,
    *,
    host: str,
    port: int,
    node_id: str,
    data_dir: Path,
    topology: Topology,
    nats_url: str,
) -> None:
    publisher = Publisher(
        nats_url, topology, data_dir / f"outbox-{node_id}.sqlite", name=f"nexus-gateway-{node_id}"
    )
    await publisher.start()
    spill: SpillStore | None = None
    nc = None
    try:
        nc = await asyncio.wait_for(connect(nats_url, name=f"nexus-gateway-spill-{node_id}"), 5)
        js = nc.jetstream()
        await ensure_streams(js, topology)
        spill = SpillStore(js, topology.spill_bucket)
    except Exception as exc:  # NATS away at start-up: serve anyway, bodies over 256 KiB go unspilled
        log.warning(
            "NATS not reachable at start-up (%s); events go to the outbox until it is", type(exc).__name__
        )
    app = create_app(snapshot, publisher, node_id=node_id, spill=spill)
    server = await start_gateway(app, host=host, port=port)
    print(f"nexus gateway listening on {server.url} (node {node_id})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.close()
        await publisher.close()
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        snapshot = load_snapshot(args.config)
    except ConfigError as exc:
        print(f"nexus gateway: {exc}", file=sys.stderr)
        return 2
    gw = snapshot.config.gateway
    node_id = args.node_id or gw.node_id or default_node_id()
    Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    import uvloop

    uvloop.run(
        serve(
            snapshot,
            host=args.host or gw.host,
            port=args.port if args.port is not None else gw.port,
            node_id=node_id,
            data_dir=Path(args.data_dir),
            topology=Topology(prefix=args.stream_prefix),
            nats_url=os.environ.get("NEXUS_NATS_URL", "nats://127.0.0.1:4222"),
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
