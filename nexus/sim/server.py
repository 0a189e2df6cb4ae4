"""The sim's app factory and an in-process runner."""

from __future__ import annotations

import ssl

import msgspec
from aiohttp import web

from nexus.sim.formats import FORMATS
from nexus.sim.settings import SimSettings
from nexus.sim.state import SIM_STATE, SimState

_encoder = msgspec.json.Encoder()


async def _requests(request: web.Request) -> web.Response:
    return web.Response(
        body=_encoder.encode(request.app[SIM_STATE].recorder.snapshot()), content_type="application/json"
    )


async def _reset(request: web.Request) -> web.Response:
    request.app[SIM_STATE].recorder.reset()
    return web.Response(status=204)


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def create_sim_app(settings: SimSettings | None = None) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[SIM_STATE] = SimState(settings or SimSettings())
    for register in FORMATS.values():
        register(app)
    app.router.add_get("/_sim/requests", _requests)
    app.router.add_delete("/_sim/requests", _reset)
    app.router.add_get("/healthz", _healthz)
    return app


class SimServer:
    """A running sim: ``url`` is the OpenAI-style base URL (ending in /v1)."""

    def __init__(
        self, runner: web.AppRunner, app: web.Application, host: str, port: int, scheme: str = "http"
    ) -> None:
        self.scheme = scheme
        self.runner = runner
        self.app = app
        self.host = host
        self.port = port

    @property
    def root(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.root}/v1"

    @property
    def state(self) -> SimState:
        return self.app[SIM_STATE]

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_sim(
    settings: SimSettings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
) -> SimServer:
    """Start the sim on the running loop; ``port=0`` picks a free port;
    ``ssl_context`` serves HTTPS (Vertex token endpoints must be https)."""
    app = create_sim_app(settings)
    # Cancelling handlers on disconnect lets a "hang" request end when the
    # caller gives up, so shutdown never waits on it.
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=ssl_context)
    await site.start()
    server = site._server
    assert server is not None
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return SimServer(runner, app, host, int(bound), scheme="https" if ssl_context else "http")
