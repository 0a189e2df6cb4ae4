"""A running proxy node with its admin listener: what ``nexus proxy`` and
``nexus up`` start.  ``ensure_dev_ca`` makes a development CA on first
start when the config names none."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from ingress.proxy.admin import create_admin_app
from ingress.proxy.attestation import AgentKeyLookup, HubAgentKeys
from ingress.proxy.auth import HubCredentials, nats_ask
from ingress.proxy.certs import generate_ca
from ingress.proxy.node import Emitter, ProxyNode
from streams.config_proxy import CaSource, parse_proxy_address, proxy_address
from streams.config_snapshot import ConfigSnapshot, resolve_secret
from streams.snapshots import ProxyEndpoint, Snapshot, SnapshotFollower
from streams.spill import SpillStore
from streams.topology import Topology
from streams.vault.master import MasterKeys

log = logging.getLogger("nexus.proxy")


def ensure_dev_ca(snapshot: ConfigSnapshot, folder: Path) -> ConfigSnapshot:
    """The snapshot with a development CA (made once, kept in ``folder``)
    when its proxy has none configured."""
    cfg = snapshot.config
    if cfg.proxy.tls.cas:
        return snapshot
    cert, key = folder / "ca.pem", folder / "ca-key.pem"
    if not cert.exists() or not key.exists():
        generate_ca(cert, key, name="Nexus development CA")
        log.info("made a development CA for the proxy in %s", folder)
    tls = msgspec.structs.replace(cfg.proxy.tls, cas=(CaSource(cert_file=str(cert), key_file=str(key)),))
    proxy = msgspec.structs.replace(cfg.proxy, tls=tls)
    return ConfigSnapshot(msgspec.structs.replace(cfg, proxy=proxy), snapshot.hmac_secret)


class HubFeed:
    """The Hub's snapshots for a proxy started from the Hub alone (``nexus
    proxy --hub`` with no config file): the first one (or, with the Hub
    away, the one this node last ran, from ``cache_path``) starts the node,
    and each later one is applied to it."""

    def __init__(self, nats_url: str, topology: Topology, *, node_id: str, cache_path: Path | None) -> None:
        self._queue: asyncio.Queue[ConfigSnapshot] = asyncio.Queue()
        self._proxy: RunningProxy | None = None
        self.follower = SnapshotFollower(
            nats_url, topology, node_kind="proxy", node_id=node_id, apply=self._apply, cache_path=cache_path
        )

    async def _apply(self, snap: Snapshot) -> None:
        # The follower validated it; the HMAC secret is this node's own.
        snapshot = ConfigSnapshot(snap.config, resolve_secret(snap.config), revision=snap.revision)
        if self._proxy is None:
            self._queue.put_nowait(snapshot)  # not serving yet: the newest one queued starts it
        else:
            await self._proxy.apply(snapshot)

    async def first(self) -> ConfigSnapshot:
        await self.follower.start()
        if self._queue.empty():
            log.info("waiting for the Hub's first configuration snapshot")
        snapshot = await self._queue.get()
        while not self._queue.empty():
            snapshot = self._queue.get_nowait()
        return snapshot

    async def serving(self, proxy: RunningProxy) -> None:
        """``proxy`` runs: what arrived since ``first`` is applied (the
        newest), then every later snapshot goes straight to it; its
        ``close`` stops the follower."""
        proxy.follower = self.follower
        await self.follower.set_proxy(proxy.endpoint())
        while not self._queue.empty():
            latest = self._queue.get_nowait()
            while not self._queue.empty():
                latest = self._queue.get_nowait()
            await proxy.apply(latest)
        self._proxy = proxy  # (no await since the queue was last seen empty)


class RunningProxy:
    def __init__(
        self,
        node: ProxyNode,
        runner: web.AppRunner,
        admin_host: str,
        admin_port: int,
        *,
        valkey: Any = None,
        valkey_prefix: str = "nexus:",
        advertise: str = "",
    ) -> None:
        self.node = node
        self.runner = runner
        # host:port clients are told to use (advertised_address).
        self.advertise = advertise or advertised_address("", str(node.host), int(node.port))
        self.admin_host = admin_host
        self.admin_port = admin_port
        self.valkey = valkey
        self.valkey_prefix = valkey_prefix
        # Where a development CA is kept: every snapshot without a CA gets it.
        self.dev_ca: Path | None = None
        self.follower: SnapshotFollower | None = None
        self._lock = asyncio.Lock()

    async def apply(self, snapshot: ConfigSnapshot) -> None:
        """A config snapshot while serving (``ProxyNode.reconfigure``): the
        compliance engine is rebuilt only when the hooks changed; raises,
        changing nothing, when it cannot be built."""
        async with self._lock:
            if self.dev_ca is not None:
                snapshot = ensure_dev_ca(snapshot, self.dev_ca)
            node = self.node
            engine = node.engine
            if snapshot.config.hooks != node.snapshot.config.hooks:
                engine = await build_engine(snapshot, self.valkey, self.valkey_prefix, node.node.id)
            node.reconfigure(snapshot, engine)

    def endpoint(self) -> ProxyEndpoint:
        """What this node reports for clients (the Hub's PAC file and CA
        bundle): its advertised address and its CAs' certificates, never a
        key.  Both are bound at start, like the listen address."""
        return ProxyEndpoint(
            address=self.advertise,
            ca_certificates=tuple(a.pem.decode() for a in self.node.authorities),
        )

    async def follow(
        self, nats_url: str, topology: Topology, *, cache_path: Path | None, heartbeat_s: float = 15.0
    ) -> None:
        """Follow the Hub's snapshots (the fleet kill switch, interception
        domains, hooks, ... as admins change them); the last one applied is
        kept at ``cache_path`` for a restart without the Hub.  Its reports
        carry ``endpoint``: three missed heartbeats and the Hub's PAC file
        leaves this node out."""

        async def on_snapshot(snap: Snapshot) -> None:
            # The follower validated it; the HMAC secret is this node's own.
            await self.apply(ConfigSnapshot(snap.config, resolve_secret(snap.config), revision=snap.revision))

        self.follower = SnapshotFollower(
            nats_url,
            topology,
            node_kind="proxy",
            node_id=self.node.node.id,
            apply=on_snapshot,
            cache_path=cache_path,
            heartbeat_s=heartbeat_s,
            proxy=self.endpoint(),
        )
        await self.follower.start()

    @property
    def proxy_url(self) -> str:
        return f"http://{self.node.host}:{self.node.port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin_host}:{self.admin_port}"

    async def close(self) -> None:
        if self.follower is not None:
            await self.follower.stop()
        await self.runner.cleanup()
        engine = self.node.engine
        await self.node.close()
        if engine is not None:
            await engine.aclose()


def advertised_address(advertise: str, host: str, port: int) -> str:
    """The ``host:port`` clients are told to use: ``advertise`` (its port,
    else the bound one); else the listen address, unless it is a wildcard,
    where the machine's hostname is the best guess (``--advertise`` or
    ``proxy.advertise`` when clients know the node by another name)."""
    if advertise:
        name, wanted = parse_proxy_address(advertise)
        return proxy_address(name, wanted or port)
    try:
        wildcard = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        wildcard = not host
    return proxy_address(socket.gethostname() if wildcard else host, port)


async def build_engine(snapshot: ConfigSnapshot, valkey: Any, prefix: str, node_id: str) -> Any:
    """The compliance engine, when some hook can run: the connection stage
    on every CONNECT, the request and response stages on decrypted LLM API
    calls (the pipeline's pass-through stage list)."""
    from ingress.pipeline.stages.compliance import build_engine as pipeline_engine

    return await pipeline_engine(snapshot, valkey=valkey, key_prefix=prefix, node_id=node_id)


async def open_spill(nats_url: str, topology: Topology, node_id: str) -> tuple[SpillStore | None, Any]:
    """The spill store for bodies over the events' inline limit (the JetStream
    object store, as the gateway's) and its NATS connection (the caller
    closes it); (None, None) when NATS is away at start-up: the proxy serves
    anyway and such bodies are recorded by size only."""
    from streams.jetstream import connect

    try:
        nc = await asyncio.wait_for(connect(nats_url, name=f"nexus-proxy-spill-{node_id}"), 5)
    except Exception as exc:
        log.warning(
            "proxy: NATS not reachable at start-up (%s): large bodies are not spilled", type(exc).__name__
        )
        return None, None
    return SpillStore(nc.jetstream(), topology.spill_bucket), nc


def hub_agent_keys(nc: Any, topology: Topology) -> AgentKeyLookup | None:
    """The agents the Hub enrolled, read from its agents bucket through the
    node's NATS connection (cached 1 s: a revocation stops verifying within
    2 s); None without a connection (then a configured keys file, or no
    agent is trusted)."""
    if nc is None:
        return None
    from streams.agents import AgentDirectory

    return HubAgentKeys(AgentDirectory(nc.jetstream(), topology))


def hub_users(nc: Any, topology: Topology, node_id: str) -> HubCredentials | None:
    """The Hub's users, asked of the Hub through the node's NATS connection
    (proxy.auth.hub_users); None without a connection (then only the
    config's users and virtual keys get in)."""
    if nc is None:
        return None
    return HubCredentials(nats_ask(nc, topology.proxy_signin_subject), node_id=node_id)


async def _master_keys(env: dict[str, str]) -> MasterKeys | None:
    """The vault's master keys, to recognise sealed provider keys by their
    fingerprints; without them (none configured, or unreadable) keys are
    classified from the config's environment variables only."""
    from streams.vault.master import MasterKeyError, load_master_keys

    try:
        return await asyncio.to_thread(load_master_keys, env)
    except MasterKeyError as exc:
        log.warning("proxy: vault master keys unavailable (%s): vault credentials not recognised", exc)
        return None


async def start_proxy(
    snapshot: ConfigSnapshot,
    emitter: Emitter,
    *,
    node_id: str,
    valkey: Any = None,
    valkey_prefix: str = "nexus:",
    host: str | None = None,
    port: int | None = None,
    admin_host: str | None = None,
    admin_port: int | None = None,
    env: dict[str, str] | None = None,
    spill: SpillStore | None = None,
    agent_keys: AgentKeyLookup | None = None,
    advertise: str | None = None,
    hub_users: HubCredentials | None = None,
) -> RunningProxy:
    """Start a node and its admin listener.  ``advertise`` (``--advertise``)
    overrides ``proxy.advertise``: the address the node tells the Hub
    clients should use."""
    cfg = snapshot.config.proxy
    if advertise:
        parse_proxy_address(advertise, where="--advertise")  # a ConfigError before anything starts
    environ = dict(os.environ) if env is None else env
    engine = await build_engine(snapshot, valkey, valkey_prefix, node_id)
    masters = await _master_keys(environ) if snapshot.config.vault.credentials else None
    node = ProxyNode(
        snapshot,
        emitter,
        node_id=node_id,
        valkey=valkey,
        valkey_prefix=valkey_prefix,
        engine=engine,
        env=environ,
        masters=masters,
        spill=spill,
        agent_keys=agent_keys,
        hub_users=hub_users,
    )
    try:
        await node.start(host or cfg.host, cfg.port if port is None else port)
    except OSError as exc:
        await node.close()
        raise RuntimeError(
            f"proxy: cannot listen on {host or cfg.host}:{cfg.port if port is None else port}: {exc.strerror}"
        ) from None
    runner = web.AppRunner(create_admin_app(node, environ.get(cfg.admin_token_env, "")), access_log=None)
    await runner.setup()
    ahost = admin_host or cfg.admin_host
    aport = cfg.admin_port if admin_port is None else admin_port
    site = web.TCPSite(runner, ahost, aport)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        await node.close()
        raise RuntimeError(f"proxy: cannot listen on {ahost}:{aport} (admin): {exc.strerror}") from None
    bound = runner.addresses[0][1] if runner.addresses else aport
    address = advertised_address(cfg.advertise if advertise is None else advertise, str(node.host), node.port)
    return RunningProxy(
        node, runner, ahost, int(bound), valkey=valkey, valkey_prefix=valkey_prefix, advertise=address
    )
