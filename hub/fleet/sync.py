"""The thing-facing endpoints of the sync protocol (streams.fleet_wire): a
WebSocket for change signals and reports, a long poll where WebSockets do
not pass, the pull of the desired state and the report over HTTP.

Every call carries the thing's token (``Authorization: Bearer nxt_...``);
an unknown or revoked thing is refused (401), and a revoked thing's open
WebSocket gets ``revoked`` and is closed.  These calls are not admin
actions: they are not in the admin API's OpenAPI document and not in the
admin audit trail (a fleet reports every few seconds); what they change is
the thing's report, and every admin change to a thing is audited where it
is made.  Errors use the admin API's error shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import WSMsgType, web

from hub.api.errors import ApiError
from hub.api.http import error_response, json_response
from hub.fleet.registry import Registry
from hub.state import Resource
from streams.events import uuid7
from streams.fleet_wire import (
    DESIRED_PATH,
    MAX_WAIT_S,
    REPORT_PATH,
    SIGNAL_PATH,
    WS_PATH,
    Report,
    Signal,
    encode,
    report_decoder,
)

log = logging.getLogger("nexus.hub.fleet")

FLEET = web.AppKey("nexus_fleet", Registry)
MAX_REPORT = 256 * 1024
WS_HEARTBEAT_S = 20.0  # WebSocket pings: a dead peer is noticed within two


def _authenticated(request: web.Request) -> Resource:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    thing = None
    if scheme.lower() == "bearer" and token.strip():
        thing = request.app[FLEET].thing_by_token(token.strip())
    if thing is None:
        raise ApiError("unauthenticated", "a thing's token is required (Authorization: Bearer nxt_...)")
    return thing


def _int(request: web.Request, name: str) -> int:
    raw = request.query.get(name, "0")
    try:
        value = int(raw)
    except ValueError:
        raise ApiError("invalid_query", f"{name}: a whole number", field=name) from None
    if not 0 <= value < 2**63:
        raise ApiError("invalid_query", f"{name}: a whole number", field=name)
    return value


def _wait(request: web.Request) -> float:
    raw = request.query.get("wait", "25")
    try:
        value = float(raw)
    except ValueError:
        raise ApiError("invalid_query", "wait: seconds (0-30)", field="wait") from None
    if not 0 <= value <= MAX_WAIT_S:
        raise ApiError("invalid_query", "wait: seconds (0-30)", field="wait")
    return value


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _answering(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        request_id = request.headers.get("X-Request-Id", "")[:64] or uuid7()
        resp: web.StreamResponse
        try:
            resp = await handler(request)
        except ApiError as err:
            resp = error_response(err, request_id)
        if not resp.prepared:
            resp.headers["X-Request-Id"] = request_id
        return resp

    return wrapped


async def websocket(request: web.Request) -> web.StreamResponse:
    registry = request.app[FLEET]
    thing = _authenticated(request)
    ws = web.WebSocketResponse(heartbeat=WS_HEARTBEAT_S, max_msg_size=MAX_REPORT)
    await ws.prepare(request)
    sub = registry.subscribe(thing.id)

    async def signals() -> None:
        last: Signal | None = None
        while not ws.closed:
            sub.wake.clear()
            current = registry.thing(thing.id)
            sig = registry.signal(current) if current is not None else None
            if sig is None or sig.kind == "revoked":
                await ws.send_str(encode(Signal(kind="revoked", thing=thing.id, version=0)).decode())
                await ws.close(code=4401, message=b"revoked")
                return
            if last is None:
                sig = msgspec.structs.replace(sig, kind="hello")
            if last is None or (sig.version, sig.push) != (last.version, last.push):
                await ws.send_str(encode(sig).decode())
                last = sig
            await sub.wake.wait()

    writer = asyncio.create_task(signals(), name=f"fleet-ws-{thing.id}")
    try:
        await registry.touch(thing, "websocket")
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                report = report_decoder.decode(msg.data)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                await ws.close(code=1007, message=f"not a report: {exc}"[:120].encode())
                break
            current = registry.thing(thing.id)
            if current is None or current.thing is None or current.thing.status != "active":
                break
            await registry.record(current, report, "websocket")
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await writer
        registry.unsubscribe(sub)
    return ws


async def long_poll(request: web.Request) -> web.StreamResponse:
    """The signal once it differs from (version, push), or after ``wait``."""
    registry = request.app[FLEET]
    thing = _authenticated(request)
    version, push, wait = _int(request, "version"), _int(request, "push"), _wait(request)
    await registry.touch(thing, "long-poll")
    sub = registry.subscribe(thing.id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    try:
        while True:
            sub.wake.clear()
            current = registry.thing(thing.id)
            sig = registry.signal(current) if current is not None else None
            if sig is None or sig.kind == "revoked":
                return json_response(Signal(kind="revoked", thing=thing.id, version=0))
            remaining = deadline - loop.time()
            if (sig.version, sig.push) != (version, push) or remaining <= 0:
                return json_response(sig)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sub.wake.wait(), remaining)
    finally:
        registry.unsubscribe(sub)


async def desired(request: web.Request) -> web.StreamResponse:
    registry = request.app[FLEET]
    thing = _authenticated(request)
    return json_response(registry.desired(thing))


async def report(request: web.Request) -> web.StreamResponse:
    registry = request.app[FLEET]
    thing = _authenticated(request)
    if request.content_length is not None and request.content_length > MAX_REPORT:
        raise ApiError("payload_too_large", f"a report is at most {MAX_REPORT} bytes")
    data = await request.content.read(MAX_REPORT + 1)
    if len(data) > MAX_REPORT:
        raise ApiError("payload_too_large", f"a report is at most {MAX_REPORT} bytes")
    try:
        body: Report = report_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise ApiError("invalid_field", f"not a report: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ApiError("invalid_json", f"the body is not valid JSON: {exc}") from None
    await registry.record(thing, body, "long-poll")
    return web.Response(status=204, headers={"Cache-Control": "no-store"})


def add_routes(app: web.Application, registry: Registry) -> None:
    app[FLEET] = registry
    app.router.add_get(WS_PATH, _answering(websocket))
    app.router.add_get(SIGNAL_PATH, _answering(long_poll))
    app.router.add_get(DESIRED_PATH, _answering(desired))
    app.router.add_post(REPORT_PATH, _answering(report))
