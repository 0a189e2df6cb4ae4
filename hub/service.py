"""The Hub as a running service: the control plane, the snapshot publisher,
the Postgres read model, admin sessions, the admin audit publisher and the
admin API on port 3060, started and stopped together.

    server = HubServer(HubSettings(nats_url=..., topology=..., data_dir=...))
    await server.start()
    password = await server.bootstrap_admin("admin@example.com")   # first start only
    ...
    await server.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import nats
import nats.errors
from aiohttp import web
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import Error as JetStreamError

from hub.agents.ca import AgentCA
from hub.agents.enrolment import Enrolment
from hub.api.app import create_app
from hub.api.http import Hub
from hub.commands import Create, SetPassword
from hub.control import ControlPlane
from hub.fleet.drift import Policy
from hub.fleet.jobs import register_fleet_jobs
from hub.fleet.registry import Registry as FleetRegistry
from hub.importer import apply_plan, plan
from hub.jobs.agents import register_agent_jobs
from hub.jobs.history import HistoryWriter
from hub.jobs.registry import Registry
from hub.jobs.retention import register_body_retention
from hub.jobs.scheduler import Scheduler
from hub.jobs.standard import register_standard, register_vault_rewrap
from hub.publishing import SnapshotPublisher
from hub.readmodel import ReadModelWriter
from hub.signin.federation import FlowStore
from hub.signin.guard import LoginGuard
from hub.signin.kv import Bucket
from hub.signin.oidc import OidcClients
from hub.signin.passwords import hash_password, random_password
from hub.signin.proxy_verifier import ProxyVerifier
from hub.signin.sessions import MAX_LIFETIME_S, KvSessionStore
from hub.state import HubState
from hub.store import ConfigStore
from hub.vault.service import VaultService
from streams.config import Auth, NexusConfig
from streams.config_base import ConfigError
from streams.config_hub import Attachment, UserSpec
from streams.config_snapshot import resolve_secret
from streams.events import Node, now_ms, uuid7
from streams.fleet_wire import software_version
from streams.jetstream import ensure_streams
from streams.probe import Prober
from streams.publisher import Publisher
from streams.snapshots import NodeReport, SnapshotStore, report_bucket, report_key
from streams.tasks import stop_tasks
from streams.topology import Topology
from streams.vault.keystore import KeyStore
from streams.vault.master import load_master_keys

log = logging.getLogger("nexus.hub")

DEFAULT_PORT = 3060
BOOTSTRAP = "system:bootstrap"


@dataclass
class HubSettings:
    nats_url: str
    topology: Topology
    data_dir: Path
    postgres_dsn: str | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    node_id: str = "hub"
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)
    # The session bucket's max age: no session outlives it, whatever the
    # signin settings say (their session_max_seconds is at most 24 h).
    session_lifetime_s: float = MAX_LIFETIME_S
    # Reverse proxies (CIDRs) whose X-Forwarded-For / -Proto are believed.
    trusted_proxies: tuple[str, ...] = ()
    # Sign-in state (throttle buckets, lockouts, OIDC flows): the bucket's
    # max age bounds how long an entry nobody touches is kept.
    signin_bucket_ttl_s: float = 24 * 3600
    # Serve the admin API over TLS (PEM files); session cookies are then
    # Secure.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    snapshot_debounce_s: float = 0.05
    # The agent CA (PEM files; the key 0600).  Unset: one is generated into
    # <data_dir>/agent-ca on the first start.
    agent_ca_cert: Path | None = None
    agent_ca_key: Path | None = None
    # The scheduler: the leader lease (a follower takes over once the
    # leader missed it for this long), how often due jobs are looked for,
    # and the wall clock (ms) jobs see (tests inject one).
    jobs_lease_s: float = 6.0
    jobs_tick_s: float = 0.5
    jobs_clock: Callable[[], int] = now_ms
    # The fleet (hub.fleet): how often the drift job runs, how long a thing
    # may leave a signal unanswered before it is re-pushed, and how often
    # this Hub reports itself (it is a thing too).
    fleet_drift_every_s: float = 10.0
    fleet_repush_after_s: float = 10.0
    heartbeat_s: float = 15.0
    # The admin API's URL as browsers reach it (OIDC redirect URIs); ""
    # derives it from each request's Host.
    public_url: str = ""
    # An ID token naming a key the Hub has not seen refetches the provider's
    # JWKS at most this often.
    oidc_jwks_min_refetch_s: float = 60.0


def hmac_secret_of(state: HubState, env: Mapping[str, str]) -> bytes:
    """The secret keys are hashed under: the auth settings' environment
    variable, else the literal the demo config carries."""
    res = state.get("settings", "auth")
    auth: Auth = res.spec if res is not None else Auth()
    return resolve_secret(NexusConfig(auth=auth), env)


class HubServer:
    def __init__(self, settings: HubSettings, *, prober: Prober | None = None) -> None:
        self.settings = settings
        # The provider probe (handed in by the composition root: the Hub does
        # not import the data plane); None: the probe routes answer 503.
        self.prober = prober
        self.nc: NATS | None = None
        self.control: ControlPlane | None = None
        self.snapshots: SnapshotPublisher | None = None
        self.readmodel: ReadModelWriter | None = None
        self.audit: Publisher | None = None
        # The job table: register jobs here before start() (one call each).
        self.jobs = Registry()
        register_standard(self.jobs)
        self.scheduler: Scheduler | None = None
        self.job_history: HistoryWriter | None = None
        self.vault: VaultService | None = None
        self.fleet: FleetRegistry | None = None
        # Answers proxies asking whether a user's e-mail and password are right.
        self.proxy_signin: ProxyVerifier | None = None
        self._beat: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self.hub: Hub | None = None
        self.url = ""
        self.started_at = time.time()
        self._stopped = False

    async def start(self) -> None:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        # A master key source that is set but unusable stops the start
        # (MasterKeyError, naming the source); none set: the vault answers 503.
        master = await asyncio.to_thread(load_master_keys, s.env)
        if s.agent_ca_cert is not None and s.agent_ca_key is not None:
            ca = await asyncio.to_thread(AgentCA.load, s.agent_ca_cert, s.agent_ca_key)
        else:
            ca = await asyncio.to_thread(AgentCA.in_dir, s.data_dir / "agent-ca")
        self.nc = await nats.connect(
            s.nats_url, name=f"nexus-hub-{s.node_id}", max_reconnect_attempts=-1, reconnect_time_wait=0.5
        )
        js = self.nc.jetstream()
        await ensure_streams(js, s.topology)
        self.control = ControlPlane(ConfigStore(js, s.topology))
        await self.control.start()
        self.snapshots = SnapshotPublisher(SnapshotStore(js, s.topology), debounce_s=s.snapshot_debounce_s)
        self.control.on_change(self.snapshots.changed)
        await self.snapshots.start()
        self.snapshots.changed(self.control.state)  # publish what the stream holds, if it differs
        if s.postgres_dsn:
            self.readmodel = ReadModelWriter(s.postgres_dsn, s.topology.config_stream)
            self.control.on_change(self.readmodel.changed)
            await self.readmodel.start()
            self.readmodel.changed(self.control.state)
        snapshot_publisher = self.snapshots
        self.fleet = FleetRegistry(
            self.control,
            js,
            s.topology,
            head=lambda: snapshot_publisher.head,
            policy=Policy(repush_after_s=s.fleet_repush_after_s),
        )
        await self.fleet.start()
        register_fleet_jobs(self.jobs, self.fleet, drift_every_s=s.fleet_drift_every_s)
        self.snapshots.on_head(lambda _: self.fleet.wake_all() if self.fleet is not None else None)
        self._beat = asyncio.create_task(self._report_self(js), name="hub-report")
        self.audit = Publisher(
            s.nats_url,
            s.topology,
            s.data_dir / f"hub-audit-outbox-{s.node_id}.sqlite",
            name=f"nexus-hub-audit-{s.node_id}",
        )
        await self.audit.start()
        self.vault = VaultService(self.control, KeyStore(js, s.topology), master)
        if master is None:
            log.warning("hub: no vault master key (NEXUS_VAULT_MASTER_KEY...): credentials cannot be stored")
        elif self.jobs.get("vault-rewrap") is None:
            # The leader's periodic pass also finishes a rotation whose
            # rewrap a Hub did not (it stopped, or another replica rotated).
            register_vault_rewrap(self.jobs, self.vault.rewrapper)
        if s.postgres_dsn and self.jobs.get("body-retention") is None:
            register_body_retention(self.jobs, s.postgres_dsn, js, s.topology)
        enrolment = Enrolment(js, s.topology, ca)
        if self.jobs.get("enrolment-token-expiry") is None:
            register_agent_jobs(self.jobs, enrolment, ca)
        self.scheduler = Scheduler(
            self.jobs,
            Bucket(js, s.topology.jobs_bucket, ttl_s=0),
            self.control,
            self.audit,
            Node(kind="hub", id=s.node_id),
            lease_ttl_s=s.jobs_lease_s,
            tick_s=s.jobs_tick_s,
            clock=s.jobs_clock,
        )
        await self.scheduler.start()
        if s.postgres_dsn:
            self.job_history = HistoryWriter(s.postgres_dsn, js, s.topology)
            await self.job_history.start()
        snapshots = self.snapshots

        async def wait_published(seq: int) -> Any:
            return await snapshots.wait_reflects(seq, timeout=5.0)

        signin_bucket = Bucket(js, s.topology.signin_bucket, ttl_s=s.signin_bucket_ttl_s)
        guard = LoginGuard(signin_bucket)
        hub = Hub(
            control=self.control,
            sessions=KvSessionStore(Bucket(js, s.topology.session_bucket, ttl_s=s.session_lifetime_s)),
            guard=guard,
            flows=FlowStore(signin_bucket),
            oidc=OidcClients(min_refetch_s=s.oidc_jwks_min_refetch_s),
            env=s.env,
            public_url=s.public_url,
            trusted_proxies=tuple(ipaddress.ip_network(c, strict=False) for c in s.trusted_proxies),
            audit=self.audit,
            hmac_secret=lambda state: hmac_secret_of(state, s.env),
            node=Node(kind="hub", id=s.node_id),
            postgres_dsn=s.postgres_dsn,
            wait_published=wait_published,
            extras={"scheduler": self.scheduler},
            vault=self.vault,
            fleet=self.fleet,
            prober=self.prober,
            enrolment=enrolment,
            provider_env=s.env,
        )
        self.hub = hub
        # The same guard as the admin API's sign-in: guesses through a proxy
        # and through the API count against one lockout.
        control = self.control
        self.proxy_signin = ProxyVerifier(
            self.nc,
            s.topology,
            lambda: control.state,
            guard,
            audit=self.audit.emit if self.audit is not None else None,
            node=Node(kind="hub", id=s.node_id),
        )
        await self.proxy_signin.start()
        app = create_app(hub, health=self.health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        tls: ssl.SSLContext | None = None
        if s.tls_cert is not None:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.minimum_version = ssl.TLSVersion.TLSv1_2
            tls.load_cert_chain(s.tls_cert, s.tls_key)
        site = web.TCPSite(self._runner, s.host, s.port, ssl_context=tls)
        await site.start()
        port = s.port
        if port == 0:
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            port = sockets[0].getsockname()[1]
        self.url = f"{'https' if tls is not None else 'http'}://{s.host}:{port}"
        log.info("hub: admin API on %s (CONFIG sequence %d)", self.url, self.control.state.seq)

    async def stop(self) -> None:
        # Once: a test stops the Hub under a running proxy, then its fixture
        # stops it again (the audit publisher cannot be closed twice).
        if self._stopped:
            return
        self._stopped = True
        if self.vault is not None:
            await self.vault.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.proxy_signin is not None:
            await self.proxy_signin.stop()
            self.proxy_signin = None
        # The scheduler first: it releases the lease (a follower takes over
        # at once) and records the end of runs it cut short.
        for jobs_part in (self.scheduler, self.job_history):
            if jobs_part is not None:
                await jobs_part.stop()
        if self._beat is not None:
            with contextlib.suppress(Exception):
                await stop_tasks(self._beat, within_s=5)
            self._beat = None
        if self.fleet is not None:
            await self.fleet.stop()
        if self.hub is not None:
            await self.hub.oidc.close()
        if self.audit is not None:
            await self.audit.close()
        for part in (self.readmodel, self.snapshots, self.control):
            if part is not None:
                await part.stop()
        if self.nc is not None:
            await self.nc.drain()
            self.nc = None

    async def _report_self(self, js: JetStreamContext) -> None:
        """The Hub is a thing too: it reports what it runs every heartbeat
        (and is enrolled by its first report, like every NATS node)."""
        s = self.settings
        started = now_ms()
        kv = await report_bucket(js, s.topology)
        while True:
            assert self.control is not None
            head = self.snapshots.head if self.snapshots is not None else None
            report = NodeReport(
                node_kind="hub",
                node_id=s.node_id,
                revision=self.control.state.seq,
                source="hub",
                applied_at_ms=now_ms(),
                reported_at_ms=now_ms(),
                started_at_ms=started,
                host=socket.gethostname(),
                pid=os.getpid(),
                heartbeat_s=s.heartbeat_s,
                posture={
                    "software_version": software_version(),
                    "config_seq": self.control.state.seq,
                    "snapshot_revision": head.revision if head is not None else 0,
                    "read_model": self.readmodel is not None,
                    "tls": s.tls_cert is not None,
                },
            )
            try:
                await kv.put(report_key("hub", s.node_id), msgspec.json.encode(report))
            except (nats.errors.Error, JetStreamError, OSError) as exc:
                log.debug("hub: own report not written (%s)", type(exc).__name__)
            await asyncio.sleep(s.heartbeat_s)

    def health(self) -> dict[str, Any]:
        assert self.control is not None and self.snapshots is not None
        head = self.snapshots.head
        problems = []
        if self.snapshots.last_error:
            problems.append(f"snapshot: {self.snapshots.last_error}")
        if self.nc is None or not self.nc.is_connected:
            problems.append("NATS: not connected")
        return {
            "status": "failing" if problems else "ok",
            "problems": problems,
            "config_seq": self.control.state.seq,
            "snapshot_revision": head.revision if head is not None else 0,
            "read_model_seq": self.readmodel.synced_seq if self.readmodel is not None else None,
            "audit_outbox": self.audit.outbox_depth if self.audit is not None else 0,
            "jobs_leader": self.scheduler.leader() if self.scheduler is not None else False,
            # things by status (no ids: /healthz carries no tenant data)
            "fleet": self.fleet.counts() if self.fleet is not None else {},
            "uptime_s": int(time.time() - self.started_at),
        }

    # --- first start ---------------------------------------------------------------

    async def import_config(self, cfg: NexusConfig, *, actor: str = BOOTSTRAP) -> int:
        """Bring the state to ``cfg`` (what ``nexus up`` does with its file on
        a first start); returns the number of changes stored."""
        assert self.control is not None
        return await apply_plan(self.control, plan(self.control.state, cfg), actor=actor)

    async def import_on_first_start(self, cfg: NexusConfig) -> int | None:
        """``import_config`` when the state holds no configuration yet (a
        first start; ``nexus up`` and ``nexus hub run --import``); None, and
        nothing changed, when it holds some.  Not "is the CONFIG stream
        empty": the Hub writes events of its own as it starts
        (``hub.importer.holds_config`` says why that raced)."""
        from hub.importer import holds_config

        assert self.control is not None
        if holds_config(self.control.state):
            return None
        return await self.import_config(cfg)

    async def bootstrap_admin(self, email: str) -> str | None:
        """On a Hub with no user yet: a super admin with a random one-time
        password, which is returned (to be shown once) and stored only as
        its hash.  None when users exist already."""
        assert self.control is not None
        if self.control.state.count("user"):
            return None
        password = random_password()
        spec = UserSpec(
            id="admin",
            email=email,
            name="Administrator",
            policies=(Attachment(policy="NexusSuperAdmin", org=""),),
        )
        await self.control.execute(
            Create(id=uuid7(), actor=BOOTSTRAP, at_ms=now_ms(), aggregate="user", spec=spec)
        )
        digest = await asyncio.to_thread(hash_password, password)
        await self.control.execute(
            SetPassword(id=uuid7(), actor=BOOTSTRAP, at_ms=now_ms(), rid="admin", password_hash=digest)
        )
        return password

    def hmac_ready(self) -> str | None:
        """Why keys cannot be issued (no HMAC secret), or None."""
        assert self.control is not None
        try:
            hmac_secret_of(self.control.state, self.settings.env)
        except ConfigError as exc:
            return str(exc)
        return None
