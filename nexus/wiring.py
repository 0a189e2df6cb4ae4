"""How ``nexus up`` builds each component from the endpoints it started.

Each ``start_*`` returns what the caller needs and an async stopper, so the
runner can stop components in the reverse order it started them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from ingress.gateway.app import default_node_id
from nexus.keeper import Keeper
from nexus.startup import StartupError
from processors.quota import QuotaProcessor
from projections.projector import Projector
from projections.settings import ProjectorSettings
from streams.config import NexusConfig
from streams.config_snapshot import ConfigSnapshot
from streams.events import Node
from streams.publisher import Publisher
from streams.snapshots import Snapshot, SnapshotFollower
from streams.topology import Topology

log = logging.getLogger("nexus.up")

Stopper = Callable[[], Awaitable[None]]


async def start_projector(ep: Mapping[str, Any], topology: Topology) -> tuple[Projector, Stopper]:
    settings = ProjectorSettings(
        nats_url=ep["nats_url"],
        postgres_dsn=ep["postgres_dsn"],
        duckdb_path=ep["duckdb_path"],
        topology=topology,
    )
    projector = Projector(settings)
    await projector.start()
    return projector, projector.stop


async def start_quota_processor(
    snapshot: ConfigSnapshot, ep: Mapping[str, Any], topology: Topology
) -> tuple[QuotaProcessor, Stopper]:
    """The quota processor: settles UsageRecorded events on the counters the
    gateway reserves on (its position is kept with the counters)."""
    proc = QuotaProcessor(
        snapshot.config,
        nats_url=ep["nats_url"],
        valkey_url=ep["valkey_url"],
        topology=topology,
        # The gateway reserves and the quota processor settles under the
        # same prefix: the settings' NEXUS_VALKEY_PREFIX (nexus up's endpoints).
        key_prefix=ep["valkey_prefix"],
    )
    await proc.start()
    return proc, proc.stop


def quota_valkey(url: str) -> Any:
    """The gateway's Valkey client: a bounded pool, so a burst queues for a
    connection instead of opening one per request."""
    import valkey.asyncio as avalkey

    pool = avalkey.BlockingConnectionPool.from_url(
        url, max_connections=256, timeout=30, socket_timeout=None, socket_connect_timeout=5
    )  # the gate bounds each call (QuotaGate.timeout_s)
    return avalkey.Valkey(connection_pool=pool)


# A line the gateway logged at ERROR ("<time> ERROR <logger> <message>").
_LOGGED_ERROR = re.compile(r"\sERROR\s+\S+\s+(.+)$")


class GatewayProcess:
    """``nexus gateway --hub --workers N``, a child of ``nexus up``: one
    gateway process per core on the gateway's port (SO_REUSEPORT), fed by
    the Hub's snapshots.  Where the services are comes by the environment
    (``NEXUS_NATS_URL``, ``NEXUS_VALKEY_URL``, ``NEXUS_VALKEY_PREFIX``,
    ``NEXUS_STREAM_PREFIX``, ``NEXUS_DATA_DIR``), and so does the virtual
    keys' HMAC secret (the variable the config names: ``ensure_key_secret``
    put a generated one in this process's environment).  ``--parent`` makes
    it end with ``nexus up`` even if that is killed outright."""

    BANNER = re.compile(rb"nexus gateway listening on (http://\S+?)(?:/v1)?\s")

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.url = ""
        self._relay: asyncio.Task[None] | None = None

    @classmethod
    def command(cls, *, host: str, port: int, workers: int, node_id: str) -> list[str]:
        return [
            sys.executable, "-m", "nexus.cli", "gateway", "--hub", "--host", host, "--port", str(port),
            "--workers", str(workers), "--node-id", node_id, "--parent", str(os.getpid()),
        ]  # fmt: skip

    async def listening(self, timeout_s: float) -> str:
        """The gateway's URL once every worker listens (it binds after the
        Hub's first snapshot); raises when it exits or takes too long.  What
        it prints afterwards is logged (a pipe nobody reads would stall it)."""
        out = self.proc.stdout
        assert out is not None
        deadline = time.monotonic() + timeout_s
        said = ""  # the last error it logged: why it waits, when it knows
        while True:
            try:
                line = await asyncio.wait_for(out.readline(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                if said:
                    # Its own reason (a Hub snapshot it cannot apply, say),
                    # not a guess at the services.
                    raise StartupError(
                        f"the gateway did not listen within {timeout_s:.0f} s; its last error: {said}"
                    ) from None
                raise RuntimeError(f"the gateway did not listen within {timeout_s:.0f} s") from None
            if not line:
                code = await self.proc.wait()
                raise RuntimeError(f"the gateway exited with code {code} (its error is above)")
            found = self.BANNER.search(line)
            if found:
                self.url = found.group(1).decode()
                break
            text = line.decode(errors="replace").rstrip()
            found_error = _LOGGED_ERROR.search(text)
            if found_error:
                said = found_error.group(1)
            log.info("gateway: %s", text)
        self._relay = asyncio.create_task(self._log_output(out))
        return self.url

    async def _log_output(self, out: asyncio.StreamReader) -> None:
        async for line in out:
            log.info("gateway: %s", line.decode(errors="replace").rstrip())

    async def stop(self, timeout_s: float = 25.0) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()  # the supervisor stops its workers, then itself
        try:
            await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            log.warning("the gateway did not stop in %.0f s: killed", timeout_s)
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        if self._relay is not None:
            await self._relay


async def start_gateway_process(
    ep: Mapping[str, Any],
    topology: Topology,
    data: Path,
    *,
    host: str,
    port: int,
    workers: int,
    keeper: Keeper | None = None,
    first_timeout_s: float = 120.0,
) -> tuple[str, Stopper]:
    """The gateway as ``nexus gateway --hub --workers N`` processes (see
    ``GatewayProcess``); returns its URL and a stopper."""
    env = dict(os.environ)
    env.update(
        NEXUS_NATS_URL=ep["nats_url"],
        NEXUS_VALKEY_URL=ep["valkey_url"],
        NEXUS_VALKEY_PREFIX=ep["valkey_prefix"],
        NEXUS_STREAM_PREFIX=topology.prefix,
        NEXUS_DATA_DIR=str(data),
    )
    node_id = "gateway-" + default_node_id().split("-")[0]
    argv = GatewayProcess.command(host=host, port=port, workers=workers, node_id=node_id)
    # Forked by the loop's thread, not a pool thread: Linux sends the
    # parent-death signal when the *thread* that forked the child ends.  Its
    # own session: a Ctrl-C reaches nexus up, which stops it in its turn
    # (after what was started later); its errors go to nexus up's stderr.
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    if keeper is not None:
        keeper.keep("the gateway", proc.pid)
    gateway = GatewayProcess(proc)
    try:
        url = await gateway.listening(first_timeout_s)
    except BaseException:
        await gateway.stop()
        raise
    return url, gateway.stop


async def follow_hub(
    ep: Mapping[str, Any],
    topology: Topology,
    data: Path,
    *,
    name: str,
    use: Callable[[NexusConfig], Awaitable[None] | None],
) -> Stopper:
    """A processor that takes its configuration from the Hub's snapshots
    (the quota processor's limits: a key's budget set through the Hub is
    settled by the processor as it is reserved by the gateway)."""

    async def on_snapshot(snap: Snapshot) -> None:
        applied = use(snap.config)
        if applied is not None:
            await applied

    follower = SnapshotFollower(
        ep["nats_url"],
        topology,
        node_kind="processor",
        node_id=name,
        apply=on_snapshot,
        cache_path=data / f"snapshot-{name}.json",
    )
    await follower.start()
    return follower.stop


async def start_proxy(
    snapshot: ConfigSnapshot,
    ep: Mapping[str, Any],
    topology: Topology,
    data: Path,
    *,
    host: str | None = None,
    port: int | None = None,
    admin_port: int | None = None,
) -> tuple[dict[str, str], Stopper]:
    """The compliance proxy, with a development CA made in the data
    directory on first start (when the config names none)."""
    from ingress.proxy.service import ensure_dev_ca, hub_agent_keys, hub_users, open_spill
    from ingress.proxy.service import start_proxy as serve_proxy

    snapshot = ensure_dev_ca(snapshot, data / "proxy-ca")
    node_id = snapshot.config.proxy.node_id or "proxy-" + default_node_id().split("-")[0]
    publisher = Publisher(
        ep["nats_url"],
        topology,
        data / f"outbox-{node_id}.sqlite",
        name=f"nexus-proxy-{node_id}",
        node=Node(kind="proxy", id=node_id),
    )
    await publisher.start()
    valkey: Any = None
    if ep.get("valkey_url"):
        import valkey.asyncio as avalkey

        valkey = avalkey.from_url(ep["valkey_url"])  # type: ignore[no-untyped-call]

    spill, spill_nc = await open_spill(ep["nats_url"], topology, node_id)

    async def release() -> None:
        await publisher.close()
        if valkey is not None:
            await valkey.aclose()
        if spill_nc is not None:
            await spill_nc.close()

    try:
        proxy = await serve_proxy(
            snapshot,
            publisher,
            node_id=node_id,
            valkey=valkey,
            valkey_prefix=ep["valkey_prefix"],
            host=host,
            port=port,
            admin_port=admin_port,
            spill=spill,
            agent_keys=hub_agent_keys(spill_nc, topology),  # the agents the Hub enrolled
            hub_users=hub_users(spill_nc, topology, node_id),  # the Hub's users sign in
        )
    except BaseException:
        await release()
        raise

    # It follows the Hub's snapshots: the fleet kill switch, interception
    # domains and hooks changed through the admin API reach it while it serves.
    proxy.dev_ca = data / "proxy-ca"
    try:
        await proxy.follow(ep["nats_url"], topology, cache_path=data / f"snapshot-{node_id}.json")
    except BaseException:
        await proxy.close()
        await release()
        raise

    async def stop() -> None:
        await proxy.close()
        await release()

    urls = {
        "proxy_url": proxy.proxy_url,
        "proxy_admin_url": proxy.admin_url,
        "proxy_ca": snapshot.config.proxy.tls.cas[0].cert_file,
    }
    return urls, stop


async def start_hub(
    config: NexusConfig,
    ep: Mapping[str, Any],
    topology: Topology,
    data: Path,
    *,
    port: int,
    admin_email: str,
) -> tuple[HubStart, Stopper]:
    """The Hub on its port (3060): imports ``config`` on a first start (a
    state that holds no configuration yet), and creates the first admin with a one-time
    password when it has no user."""
    from hub.service import HubServer, HubSettings
    from ingress.probe import probe

    server = HubServer(
        HubSettings(
            nats_url=ep["nats_url"],
            topology=topology,
            data_dir=data / "hub",
            postgres_dsn=ep["postgres_dsn"],
            port=port,
        ),
        prober=probe,
    )
    await server.start()
    try:
        assert server.control is not None
        imported = await server.import_on_first_start(config) is not None
        password = await server.bootstrap_admin(admin_email)
    except BaseException:
        await server.stop()
        raise
    return HubStart(
        url=server.url, imported=imported, admin_email=admin_email, admin_password=password
    ), server.stop


class HubStart(NamedTuple):
    url: str
    imported: bool  # the config file was imported (a first start)
    admin_email: str
    admin_password: str | None  # set on the start that created the admin: shown once


async def wait_forever() -> None:
    await asyncio.Event().wait()
