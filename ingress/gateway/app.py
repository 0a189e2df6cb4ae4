"""The gateway's app factory and an in-process runner.

From Python::

    app = create_app(snapshot, publisher)            # publisher: streams.publisher.Publisher
    server = await start_gateway(app, host="127.0.0.1", port=3050)
    ...
    await server.close()
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiohttp import web

from ingress import heap
from ingress.gateway import quota
from ingress.gateway.cached import CACHE, CacheRuntime, tap_prepare
from ingress.gateway.cached import lifecycle as cache_lifecycle
from ingress.gateway.compliance import build_engine, wants_engine
from ingress.gateway.listener import Listener
from ingress.gateway.middleware import gateway_middleware, stamp_headers
from ingress.gateway.routed import ROUTING
from ingress.gateway.routes import add_routes
from ingress.gateway.state import STATE, EventSink, GatewayState
from ingress.gateway.targets import build_routes
from ingress.routing import RoutingRuntime
from ingress.upstream import UpstreamPool
from streams.config import ConfigSnapshot
from streams.events import Node
from streams.spill import SpillStore


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
) -> web.Application:
    """The gateway app.  The caller owns ``publisher`` (start/close it);
    the app owns its upstream sessions (created on startup, closed on
    cleanup).  ``env`` is where provider credentials are read from.

    The compliance engine of the snapshot's ``hooks`` is built on startup
    (off the event loop).  Hooks that keep state in Valkey (the rate
    limiter) use ``valkey`` (a ``valkey.asyncio`` client the caller owns),
    else a client the app opens from ``NEXUS_VALKEY_URL`` in ``env``; the
    other hooks need none.  Quotas (when the snapshot has any) reserve on
    the same client, under ``valkey_prefix`` (the quota processor's),
    unless ``quota_client`` (a ``ingress.quota.resp.PipelinedValkey``, which
    the caller owns too) is given for them."""
    node = Node(kind="gateway", id=node_id or snapshot.config.gateway.node_id or default_node_id())
    # Inside the error middleware: a reservation is released before the
    # error answer is written.
    app = web.Application(middlewares=[gateway_middleware, quota.release_unsettled])
    environ = os.environ if env is None else env
    app[STATE] = GatewayState(
        snapshot,
        publisher,
        node,
        UpstreamPool(snapshot.providers.values(), environ),
        spill,
        build_routes(snapshot, environ),
    )
    app[ROUTING] = RoutingRuntime(snapshot, admin_token=environ.get(snapshot.config.auth.admin_token_env, ""))
    app[_SETUP] = _Setup(valkey, valkey_prefix, environ.get("NEXUS_VALKEY_URL", ""))
    app.cleanup_ctx.append(_lifecycle)
    app.cleanup_ctx.append(quota.lifecycle(quota_client or valkey, valkey_prefix, environ))
    app[CACHE] = CacheRuntime(snapshot)
    app.cleanup_ctx.append(cache_lifecycle(valkey, valkey_prefix, environ))
    app.on_response_prepare.append(tap_prepare)
    app.on_response_prepare.append(stamp_headers)
    app.on_response_prepare.append(quota.stamp)
    add_routes(app)
    return app


class _Setup:
    __slots__ = ("valkey", "valkey_prefix", "valkey_url")

    def __init__(self, valkey: Any, valkey_prefix: str, valkey_url: str) -> None:
        self.valkey = valkey
        self.valkey_prefix = valkey_prefix
        self.valkey_url = valkey_url


_SETUP = web.AppKey("nexus_gateway_setup", _Setup)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    setup = app[_SETUP]
    owned_valkey: Any = None
    if wants_engine(state.snapshot.config.hooks):
        from ingress.hooks import BreakGlassLatch

        valkey = setup.valkey
        if valkey is None and setup.valkey_url:
            import valkey.asyncio as avalkey

            valkey = owned_valkey = avalkey.from_url(setup.valkey_url)  # type: ignore[no-untyped-call]
        state.valkey = valkey
        state.break_glass = BreakGlassLatch(state.node.id)
        state.compliance = await build_engine(
            state.snapshot, valkey=valkey, key_prefix=setup.valkey_prefix, node_id=state.node.id
        )
    await state.upstreams.start()
    state.admission.start()
    trimmer = heap.IdleTrimmer(lambda: state.inflight)
    trimmer.start()
    yield
    await trimmer.stop()
    state.admission.stop()
    if state.background:
        await asyncio.gather(*state.background, return_exceptions=True)
    await state.upstreams.close()
    if state.compliance is not None:
        await state.compliance.aclose()
    if owned_valkey is not None:
        await owned_valkey.aclose()


class GatewayServer:
    def __init__(self, runner: web.AppRunner, host: str, port: int, listener: Listener | None = None) -> None:
        self.runner = runner
        self.host = host
        self.port = port
        self.listener = listener

    @property
    def url(self) -> str:
        """The OpenAI-style base URL (what an SDK's ``base_url`` takes)."""
        return f"http://{self.host}:{self.port}/v1"

    async def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
        await self.runner.cleanup()


async def start_gateway(app: web.Application, *, host: str = "127.0.0.1", port: int = 0) -> GatewayServer:
    """Serve ``app`` on the running loop; ``port=0`` picks a free port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    assert runner.server is not None
    # Not a TCPSite: the loop's own accept takes one connection per loop
    # iteration, too few when the gateway is saturated (listener.py).
    listener = Listener(host, port, runner.server)
    return GatewayServer(runner, host, listener.port, listener)
