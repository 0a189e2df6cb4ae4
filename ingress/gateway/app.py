"""The gateway's app factory and an in-process runner.

From Python::

    app = create_app(snapshot, publisher)            # publisher: streams.publisher.Publisher
    server = await start_gateway(app, host="127.0.0.1", port=3050)
    ...
    await server.close()
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiohttp import web

from ingress import heap
from ingress.gateway.connection import KEEPALIVE_TIMEOUT_S, GatewayConnection
from ingress.gateway.front import NODE, front
from ingress.gateway.http1_front import Front
from ingress.gateway.listener import Listener
from ingress.gateway.routes import add_routes
from ingress.pipeline.runtime import EventSink, Node
from ingress.pipeline.swapper import Clients, Swapper
from streams.config_snapshot import ConfigSnapshot
from streams.events import Node as NodeId
from streams.settings import Settings, load_settings
from streams.spill import SpillStore
from streams.vault.opener import Opener


def default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def create_app(
    snapshot: ConfigSnapshot,
    publisher: EventSink,
    *,
    node_id: str | None = None,
    spill: SpillStore | None = None,
    env: Mapping[str, str] | None = None,
    valkey: Any = None,
    valkey_prefix: str = "nexus:",
    quota_client: Any = None,
    settings: Settings | None = None,
    vault: Opener | None = None,
) -> web.Application:
    """The gateway app, serving ``snapshot`` once started; ``apply`` (or the
    node's ``swaps.apply``) swaps in another while it serves.  The caller
    owns ``publisher`` (start/close it); the app owns its upstream sessions
    (created on startup, closed on cleanup).  ``env`` is where provider
    credentials are read from.

    A snapshot's compliance engine is built off the event loop when the
    snapshot is applied.  Hooks that keep state in Valkey (the rate
    limiter) and the response caches use ``valkey`` (a ``valkey.asyncio``
    client the caller owns), else a client the app opens from
    ``settings.valkey_url`` (default: the settings of ``env``, see
    ``streams.settings``) when a snapshot first needs one.  Quotas reserve
    under ``valkey_prefix`` (the quota processor's; ``settings.
    valkey_prefix`` on a client the app opens) on ``quota_client`` (a
    ``ingress.quota.resp.PipelinedValkey``, the caller's too) or the same
    client.  ``vault`` opens the snapshots' sealed provider credentials
    when a snapshot is applied (``streams.vault.opener``)."""
    environ = os.environ if env is None else env
    settings = load_settings(env=environ) if settings is None else settings
    node = Node(
        snapshot,
        publisher,
        NodeId(kind="gateway", id=node_id or snapshot.config.gateway.node_id or default_node_id()),
        spill,
        environ,
        Clients(valkey, quota_client, valkey_prefix, settings),
        vault,
    )
    node.swaps = Swapper(node)
    app = web.Application(middlewares=[front])
    app[NODE] = node
    app[_FIRST] = snapshot
    app.cleanup_ctx.append(_lifecycle)
    add_routes(app)
    return app


_FIRST = web.AppKey("nexus_gateway_first_snapshot", ConfigSnapshot)


async def apply(app: web.Application, snapshot: ConfigSnapshot) -> None:
    """Serve ``snapshot`` from now on (requests in progress finish on the
    one they began with); raises, changing nothing, if it cannot be built."""
    swaps = app[NODE].swaps
    assert swaps is not None
    await swaps.apply(snapshot)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    node = app[NODE]
    swaps = node.swaps
    assert swaps is not None
    await swaps.apply(app[_FIRST])
    node.admission.start()
    trimmer = heap.IdleTrimmer(lambda: node.inflight)
    trimmer.start()
    yield
    await trimmer.stop()
    node.admission.stop()
    await swaps.close()
    if node.background:
        await asyncio.gather(*node.background, return_exceptions=True)
    await node.clients.aclose()


class GatewayServer:
    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        listener: Listener | None = None,
        lean: Front | None = None,
    ) -> None:
        self.runner = runner
        self.host = host
        self.port = port
        self.listener = listener
        self.lean = lean  # the http1 front end, when it serves /v1 (else aiohttp does)

    @property
    def url(self) -> str:
        """The OpenAI-style base URL (what an SDK's ``base_url`` takes)."""
        return f"http://{self.host}:{self.port}/v1"

    async def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
        if self.lean is not None:
            await self.lean.close()
        await self.runner.cleanup()


async def start_gateway(
    app: web.Application,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    reuse_port: bool = False,
    front_end: str | None = None,
) -> GatewayServer:
    """Serve ``app`` on the running loop; ``port=0`` picks a free port;
    ``reuse_port``: one of several worker processes on the same port;
    ``front_end``: the HTTP layer, ``http1`` or ``aiohttp`` (None: the
    process's ``gateway_http`` setting, NEXUS_GATEWAY_HTTP)."""
    if front_end is None:
        front_end = load_settings().gateway_http
    # A caller that hangs up cancels its handler: the upstream call is cut,
    # the slot and the quota reservation freed, and a 499 recorded
    # (middleware.py), instead of the request running to its end unseen.
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    server = runner.server
    assert server is not None
    if front_end == "http1":
        # The app started (its runtime built, its lifecycle running); the
        # lean layer serves every request of the port.
        lean = Front(app[NODE])
        try:
            listener = Listener(host, port, lean.connection, reuse_port=reuse_port)
        except BaseException:
            await runner.cleanup()
            raise
        return GatewayServer(runner, host, listener.port, listener, lean)
    connection = functools.partial(
        GatewayConnection,
        server,
        loop=asyncio.get_running_loop(),
        access_log=None,
        keepalive_timeout=KEEPALIVE_TIMEOUT_S,
        header_timeout_s=app[NODE].current.snapshot.config.gateway.header_timeout_s,
    )
    # Not a TCPSite: the loop's own accept takes one connection per loop
    # iteration, too few when the gateway is saturated (listener.py).
    try:
        listener = Listener(host, port, connection, reuse_port=reuse_port)
    except BaseException:
        await runner.cleanup()
        raise
    return GatewayServer(runner, host, listener.port, listener)
