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

from aiohttp import web

from ingress.gateway.middleware import gateway_middleware, stamp_headers
from ingress.gateway.routes import add_routes
from ingress.gateway.state import STATE, EventSink, GatewayState
from ingress.gateway.targets import build_routes
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
) -> web.Application:
    """The gateway app.  The caller owns ``publisher`` (start/close it);
    the app owns its upstream sessions (created on startup, closed on
    cleanup).  ``env`` is where provider credentials are read from."""
    node = Node(kind="gateway", id=node_id or snapshot.config.gateway.node_id or default_node_id())
    app = web.Application(middlewares=[gateway_middleware])
    environ = os.environ if env is None else env
    app[STATE] = GatewayState(
        snapshot,
        publisher,
        node,
        UpstreamPool(snapshot.providers.values(), environ),
        spill,
        build_routes(snapshot, environ),
    )
    app.cleanup_ctx.append(_lifecycle)
    app.on_response_prepare.append(stamp_headers)
    add_routes(app)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    await state.upstreams.start()
    yield
    if state.background:
        await asyncio.gather(*state.background, return_exceptions=True)
    await state.upstreams.close()


class GatewayServer:
    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self.runner = runner
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        """The OpenAI-style base URL (what an SDK's ``base_url`` takes)."""
        return f"http://{self.host}:{self.port}/v1"

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_gateway(app: web.Application, *, host: str = "127.0.0.1", port: int = 0) -> GatewayServer:
    """Serve ``app`` on the running loop; ``port=0`` picks a free port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return GatewayServer(runner, host, int(bound))
