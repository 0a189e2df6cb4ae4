"""The minimal aiohttp pass-through the benchmark prints beside Nexus
(issue 17): an aiohttp server whose one route forwards the body to the
upstream on a pooled ``ClientSession`` and relays the answer (whole, or a
stream chunk by chunk).  No features at all: what the HTTP layer alone
costs a Python gateway on aiohttp.

    python tests/benchmarks/peers/aiohttp_passthrough.py --port 4000 --upstream http://127.0.0.1:4100/v1
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
import uvloop
from aiohttp import web

_HOP = {"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"}


def make_app(upstream: str) -> web.Application:
    app = web.Application()
    session: dict[str, aiohttp.ClientSession] = {}

    async def start(app: web.Application) -> None:
        session["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)

    async def stop(app: web.Application) -> None:
        await session["s"].close()

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {"Content-Type": "application/json"}
        async with session["s"].post(f"{upstream}/chat/completions", data=body, headers=headers) as r:
            out = {k: v for k, v in r.headers.items() if k.lower() not in _HOP}
            if r.content_type == "text/event-stream":
                resp = web.StreamResponse(status=r.status, headers=out)
                await resp.prepare(request)
                async for chunk in r.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
                return resp
            return web.Response(status=r.status, body=await r.read(), headers=out)

    app.router.add_post("/v1/chat/completions", chat)
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True, help="the upstream's /v1 base URL")
    args = p.parse_args()

    async def serve() -> None:
        runner = web.AppRunner(make_app(args.upstream), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", args.port).start()
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    uvloop.run(serve())


if __name__ == "__main__":
    main()
