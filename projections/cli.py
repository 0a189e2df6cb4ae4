"""``nexus project`` (run the worker) and ``nexus replay`` (rebuild stores)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys
import time

import asyncpg
import duckdb
import nats.errors
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from projections.progress import ProgressBar
from projections.projector import Projector
from projections.replay import replay
from projections.settings import STORES, ProjectorSettings
from projections.store import StoreError
from streams.config import NexusConfig
from streams.config_base import ConfigError
from streams.config_validation import parse_config
from streams.tasks import stop_tasks

log = logging.getLogger("nexus.projections")

# Errors an operator can act on: printed as one line, never a traceback.
_USER_ERRORS = (
    StoreError,
    ConfigError,
    nats.errors.NoServersError,
    OSError,
    asyncpg.PostgresError,
    duckdb.Error,
)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="Nexus config file (its projections: section)")
    parser.add_argument("--nats-url", help="default: $NEXUS_NATS_URL or nats://127.0.0.1:4222")
    parser.add_argument(
        "--duckdb", metavar="PATH", help="default: $NEXUS_DUCKDB_PATH or ~/.nexus/analytics.duckdb"
    )
    parser.add_argument("--stream-prefix", help="default: $NEXUS_STREAM_PREFIX or NEXUS")
    parser.add_argument("--batch-size", type=int, help="events per transaction (default 5000)")


def _settings(args: argparse.Namespace) -> ProjectorSettings:
    config: NexusConfig | None = None
    if args.config:
        try:
            with open(args.config, "rb") as fh:
                text = fh.read()
        except OSError as exc:
            raise ConfigError(f"{args.config}: cannot read: {exc.strerror}") from None
        config = parse_config(text, source=args.config)
    # Flags outrank the environment, which outranks the files.
    flags = {"nats_url": args.nats_url, "duckdb_path": args.duckdb, "stream_prefix": args.stream_prefix}
    settings = ProjectorSettings.load(config=config, flags=flags)
    if args.batch_size is not None:
        if args.batch_size < 1:
            raise ConfigError("--batch-size: must be at least 1")
        settings = dataclasses.replace(settings, batch_size=args.batch_size)
    return settings


# --- nexus project -------------------------------------------------------------


def project_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="nexus project", description="Run the projection worker.")
    _common(parser)
    parser.add_argument("--no-postgres", action="store_true", help="do not write the Postgres projection")
    parser.add_argument("--no-duckdb", action="store_true", help="do not write the DuckDB projection")
    parser.add_argument("--metrics-host", default="127.0.0.1")
    parser.add_argument(
        "--metrics-port", type=int, default=3070, help="/metrics and /healthz (0 disables; default 3070)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = _settings(args)
        if args.no_postgres:
            settings = dataclasses.replace(settings, postgres_dsn=None)
        if args.no_duckdb:
            settings = dataclasses.replace(settings, duckdb_path=None)
        return asyncio.run(_project(settings, args.metrics_host, args.metrics_port))
    except _USER_ERRORS as exc:
        print(f"nexus project: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def metrics_app(projector: Projector) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest())
        resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return resp

    async def healthz(_: web.Request) -> web.Response:
        ok = projector.healthy()
        body = {"status": "ok" if ok else "failing", "positions": projector.positions()}
        return web.json_response(body, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


async def _project(settings: ProjectorSettings, host: str, port: int) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    projector = Projector(settings)
    # The worker waits for NATS to come up (a daemon outlives its
    # dependencies' restarts, start-up included); Ctrl-C still stops it.
    starting = asyncio.create_task(projector.start())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        await stop_tasks(starting)
        await projector.stop()
        return 0
    stopping.cancel()
    starting.result()  # start-up errors (a bad DSN, a busy store) end here
    runner: web.AppRunner | None = None
    try:
        if port:
            runner = web.AppRunner(metrics_app(projector))
            await runner.setup()
            await web.TCPSite(runner, host, port).start()
        log.info(
            "projecting %s into %s (positions %s)",
            settings.topology.traffic_stream,
            ", ".join(settings.enabled_stores()),
            projector.positions(),
        )
        await stop.wait()
    finally:
        if runner is not None:
            await runner.cleanup()
        await projector.stop()
    return 0


# --- nexus replay ----------------------------------------------------------------


def replay_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="nexus replay",
        description="Drop projection stores and rebuild them from the traffic stream "
        "(stop `nexus project` for those stores first).",
    )
    parser.add_argument("--projection", choices=[*STORES, "all"], default="all")
    _common(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = _settings(args)
        names = settings.enabled_stores() if args.projection == "all" else [args.projection]
        started = time.monotonic()
        result = asyncio.run(replay(settings, names, progress=ProgressBar()))
    except _USER_ERRORS as exc:
        print(f"nexus replay: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("nexus replay: interrupted; run it again to finish the rebuild", file=sys.stderr)
        return 130
    elapsed = time.monotonic() - started
    for name, seq in result.items():
        print(f"{name}: rebuilt up to stream sequence {seq}")
    print(f"replay took {elapsed:.1f} s", file=sys.stderr)
    return 0
