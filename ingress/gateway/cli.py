"""``nexus gateway``: the gateway alone, against configured services.

Where they are comes from the settings (``streams.settings``: NATS from
``NEXUS_NATS_URL``, default nats://127.0.0.1:4222; Valkey from
``NEXUS_VALKEY_URL``...).  The gateway starts even when NATS is down: events
wait in the local outbox and are published when it returns.

``--workers N`` (default: the cores this process may run on) starts one
gateway process per core on the same port (``ingress.gateway.workers``
says what they share and what each keeps to itself).

Where the configuration comes from:

- ``--config FILE``: a file; ``SIGHUP`` reads it again and applies it while
  serving (a file that does not load is logged and the gateway keeps the
  configuration it has);
- ``--hub``: the snapshots the Hub publishes (``streams.snapshots``): the
  gateway applies each new revision while serving, reports what it runs,
  and keeps the last one on disk, so a restart while the Hub is away still
  serves.  Listening address and port come from the flags (the gateway binds
  before it has a snapshot).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import select
import signal
import sys
import time
from pathlib import Path

from aiohttp import web

from ingress.gateway.app import apply, create_app, default_node_id, start_gateway
from ingress.gateway.fleet import GatewayThing
from ingress.gateway.workers import Supervisor, available_cores, die_with_parent, reserve_port, worker_argv
from ingress.pipeline.stages.quota import wants_quota
from streams.config import Gateway
from streams.config_base import ConfigError
from streams.config_snapshot import ConfigSnapshot, load_snapshot, resolve_secret
from streams.events import Node as NodeId
from streams.jetstream import connect, ensure_streams
from streams.publisher import Publisher
from streams.settings import Settings, load_settings
from streams.snapshots import Snapshot, SnapshotFollower
from streams.spill import SpillStore
from streams.topology import Topology
from streams.vault.keystore import KeyStore
from streams.vault.master import MasterKeyError, load_master_keys
from streams.vault.opener import Opener

log = logging.getLogger("nexus.gateway")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nexus gateway", description="Run the Nexus API gateway.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="the Nexus config file (YAML); SIGHUP reloads it")
    source.add_argument(
        "--hub", action="store_true", help="serve the configuration the Hub publishes (over NATS)"
    )
    p.add_argument("--host", default=None, help="listen address (default: gateway.host in the config)")
    p.add_argument("--port", type=int, default=None, help="listen port (default: gateway.port in the config)")
    p.add_argument("--node-id", default=None)
    p.add_argument("--data-dir", default=None, help="where the event outbox lives (NEXUS_DATA_DIR)")
    p.add_argument("--stream-prefix", default=None, help="(NEXUS_STREAM_PREFIX)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="gateway processes sharing the port (NEXUS_GATEWAY_WORKERS; default: the cores available)",
    )
    # Internal: set by the supervisor on each worker's command line.
    p.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--parent", type=int, default=None, help=argparse.SUPPRESS)
    return p


class ConfigSource:
    """Where the gateway's configuration comes from, and how new versions
    reach it once it serves."""

    async def first(self) -> ConfigSnapshot:
        raise NotImplementedError

    def serving(self, app: web.Application, loop: asyncio.AbstractEventLoop) -> None:
        """The app now serves: later versions are applied to it."""

    async def close(self) -> None:
        return None


class FileSource(ConfigSource):
    def __init__(self, path: str, first: ConfigSnapshot, settings: Settings) -> None:
        self.path = path
        self._first = first
        self._settings = settings
        self._reloading: asyncio.Task[None] | None = None

    async def first(self) -> ConfigSnapshot:
        return self._first

    def serving(self, app: web.Application, loop: asyncio.AbstractEventLoop) -> None:
        def reload() -> None:
            if self._reloading is None or self._reloading.done():
                self._reloading = loop.create_task(self._reload(app))

        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGHUP, reload)

    async def _reload(self, app: web.Application) -> None:
        try:
            snapshot = await asyncio.to_thread(load_snapshot, self.path)
            problem = _quotas_without_a_store(snapshot, self._settings)
            if problem:
                raise ConfigError(problem)
            await apply(app, snapshot)
        except ConfigError as exc:
            log.error("SIGHUP: %s; still serving the configuration loaded before", exc)
        except Exception:
            log.exception("SIGHUP: the new configuration could not be applied; still serving the one before")
        else:
            log.info("SIGHUP: now serving %s (version %s)", self.path, snapshot.version)


class HubSource(ConfigSource):
    """The Hub's snapshots, through a ``SnapshotFollower`` that caches the
    last one applied and reports what the node runs."""

    def __init__(self, settings: Settings, topology: Topology, node_id: str, data_dir: Path) -> None:
        self._settings = settings
        self._got: asyncio.Queue[ConfigSnapshot] = asyncio.Queue()
        self._app: web.Application | None = None
        # A thing of the fleet: its posture in every report, the fleet keys
        # it applies (ingress.gateway.fleet).
        self.thing = GatewayThing()
        self.follower = SnapshotFollower(
            settings.nats,
            topology,
            node_kind="gateway",
            node_id=node_id,
            apply=self._apply,
            # Not per node id (it may name a process): a gateway restarted
            # without the Hub finds the snapshot its predecessor served.
            cache_path=data_dir / "snapshot-gateway.json",
            posture=self.thing.posture,
            keys=self.thing.apply_keys,
        )

    async def _apply(self, snap: Snapshot) -> None:
        # The follower validated the config; the secret is this node's own.
        snapshot = ConfigSnapshot(snap.config, resolve_secret(snap.config), revision=snap.revision)
        problem = _quotas_without_a_store(snapshot, self._settings)
        if problem:
            raise ConfigError(problem)
        if self._app is None:
            self._got.put_nowait(snapshot)  # not serving yet: the newest one queued starts it
        else:
            await apply(self._app, snapshot)
        self.thing.applied(snap.config, snap.revision)

    async def first(self) -> ConfigSnapshot:
        await self.follower.start()
        if self._got.empty():
            log.info("waiting for the Hub's first configuration snapshot")
        snapshot = await self._got.get()
        while not self._got.empty():
            snapshot = self._got.get_nowait()
        return snapshot

    def serving(self, app: web.Application, loop: asyncio.AbstractEventLoop) -> None:
        self._app = app
        # A snapshot that arrived between the first and now.
        while not self._got.empty():
            latest = self._got.get_nowait()
            loop.create_task(apply(app, latest))

    async def close(self) -> None:
        await self.follower.stop()


async def serve(
    source: ConfigSource,
    *,
    host: str,
    port: int,
    node_id: str,
    data_dir: Path,
    topology: Topology,
    settings: Settings,
    reuse_port: bool = False,
    ready_fd: int | None = None,
) -> None:
    nats_url = settings.nats
    publisher = Publisher(
        nats_url,
        topology,
        data_dir / f"outbox-{node_id}.sqlite",
        name=f"nexus-gateway-{node_id}",
        node=NodeId(kind="gateway", id=node_id),  # its heartbeat (processors.reconcile)
    )
    await publisher.start()
    spill: SpillStore | None = None
    keystore: KeyStore | None = None
    nc = None
    try:
        nc = await asyncio.wait_for(connect(nats_url, name=f"nexus-gateway-spill-{node_id}"), 5)
        js = nc.jetstream()
        await ensure_streams(js, topology)
        spill = SpillStore(js, topology.spill_bucket)
        keystore = KeyStore(js, topology)
    except Exception as exc:  # NATS away at start-up: serve anyway, bodies over 256 KiB go unspilled
        log.warning(
            "NATS not reachable at start-up (%s); events go to the outbox until it is", type(exc).__name__
        )
    snapshot = await source.first()
    try:
        master = await asyncio.to_thread(load_master_keys)
    except MasterKeyError as exc:  # checked at start-up; it changed since
        log.error("vault: %s; sealed credentials cannot be opened", exc)
        master = None
    vault = Opener(keystore, master)
    app = create_app(snapshot, publisher, node_id=node_id, spill=spill, settings=settings, vault=vault)
    server = await start_gateway(
        app, host=host, port=port, reuse_port=reuse_port, front_end=settings.gateway_http
    )
    source.serving(app, asyncio.get_running_loop())
    # What start-up built (modules, the compiled engine and its patterns,
    # token tables, the runtime) lives as long as the process: moved out of
    # the collector's reach, so a full collection walks only what requests
    # and later snapshots allocate.  Measured: a full collection of the
    # start-up heap, 55-206 ms, every 20-40 s under load, was the p99 of a
    # node under config swaps; after the freeze it is under 1 ms.  A frozen
    # object is still freed when its last reference goes; only cycles among
    # what start-up built (the first runtime's, once replaced) stay.
    gc.collect()
    gc.freeze()
    # Before the banner: a SIGTERM sent as soon as it shows must stop us cleanly.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    if ready_fd is None:
        print(f"nexus gateway listening on {server.url} (node {node_id})", flush=True)
    else:  # a worker: its supervisor prints the banner once every worker listens
        os.write(ready_fd, b"%d\n" % server.port)
        os.close(ready_fd)
    try:
        await stop.wait()
    finally:
        await source.close()
        await server.close()
        await publisher.close()
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(
            {"data_dir": args.data_dir, "stream_prefix": args.stream_prefix, "gateway_workers": args.workers}
        )
    except ConfigError as exc:
        print(f"nexus gateway: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        load_master_keys()  # a vault master key source that is set must work
    except MasterKeyError as exc:
        print(f"nexus gateway: {exc}", file=sys.stderr)
        return 2
    gw = Gateway()  # the defaults, for a gateway fed by the Hub
    snapshot: ConfigSnapshot | None = None
    if args.config is not None:
        try:
            snapshot = load_snapshot(args.config)
        except ConfigError as exc:
            print(f"nexus gateway: {exc}", file=sys.stderr)
            return 2
        unmetered = _quotas_without_a_store(snapshot, settings)
        if unmetered:
            print(f"nexus gateway: {unmetered}", file=sys.stderr)
            return 2
        gw = snapshot.config.gateway
    node_id = args.node_id or gw.node_id or default_node_id()
    host = args.host or gw.host
    port = args.port if args.port is not None else gw.port
    settings.data_path.mkdir(parents=True, exist_ok=True)
    workers = settings.gateway_workers or available_cores()
    if args.parent is not None:  # a supervisor or a lone gateway started by nexus up, or a worker
        die_with_parent(args.parent)
    if args.worker_index is None and workers > 1:
        return _supervise(argv if argv is not None else sys.argv[1:], host, port, workers, node_id)
    if args.worker_index is not None:
        node_id = f"{node_id}-w{args.worker_index}"
    import uvloop

    topology = Topology(prefix=settings.stream_prefix)
    data_dir = settings.data_path

    async def run() -> None:
        source: ConfigSource
        if snapshot is not None:
            source = FileSource(args.config, snapshot, settings)
        else:
            source = HubSource(settings, topology, node_id, data_dir)
        await serve(
            source,
            host=host,
            port=port,
            node_id=node_id,
            data_dir=data_dir,
            topology=topology,
            settings=settings,
            reuse_port=args.worker_index is not None,
            ready_fd=args.ready_fd,
        )

    try:
        uvloop.run(run())
    except OSError as exc:
        print(f"nexus gateway: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def _quotas_without_a_store(snapshot: ConfigSnapshot, settings: Settings) -> str:
    """Why the gateway must not start ("" when it may).  Quotas are
    reserved in Valkey before forwarding; without one every request a limit
    applies to is refused with a 503, which callers cannot tell from an
    outage and which an operator would only learn of from them.  A gateway
    that exits with this line at deploy time is the clearer failure (a
    Valkey configured but down at start-up is an outage instead: served,
    with 503 quota_store_unavailable, until it returns)."""
    if not wants_quota(snapshot) or settings.valkey_url:
        return ""
    q = snapshot.config.quotas
    return (
        f"the config has quotas ({len(q.budgets)} budgets, {len(q.rate_limits)} rate limits) "
        "but NEXUS_VALKEY_URL is not set, so every request they apply to would get a 503: "
        "set it to the Valkey the quota processor uses, or remove the quotas"
    )


def _supervise(argv: list[str], host: str, port: int, n: int, node_id: str) -> int:
    """Reserve the port, start ``n`` workers on it, print the banner once
    they all listen, then supervise them until told to stop."""
    try:
        reserved = reserve_port(host, port)
    except OSError as exc:
        print(f"nexus gateway: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    port = reserved.getsockname()[1]
    read_fd, write_fd = os.pipe()
    argvs = []
    for i in range(n):
        a = worker_argv(argv, i, port)
        argvs.append([*a, "--node-id", node_id, "--ready-fd", str(write_fd)])
    supervisor = Supervisor.of(argvs, pass_fds=(write_fd,))
    try:
        supervisor.start_all()
        os.close(write_fd)
        if not _await_ready(read_fd, n, supervisor):
            supervisor.signal_all(signal.SIGTERM)
            supervisor.run_until_stopped()
            print("nexus gateway: a worker failed to start (see above)", file=sys.stderr)
            return 1
        print(f"nexus gateway listening on http://{host}:{port}/v1 ({n} workers, node {node_id})", flush=True)
        return supervisor.run()
    finally:
        os.close(read_fd)
        reserved.close()


def _await_ready(fd: int, n: int, supervisor: Supervisor, timeout_s: float = 120.0) -> bool:
    """Whether all ``n`` workers reported listening before any died."""
    buf = b""
    deadline = time.monotonic() + timeout_s
    while buf.count(b"\n") < n:
        if supervisor.any_exited() or time.monotonic() > deadline:
            return False
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 1024)
            if not chunk:
                return buf.count(b"\n") >= n
            buf += chunk
    return True


if __name__ == "__main__":
    raise SystemExit(main())
