"""The gateway's front end on aiohttp: HTTP in, an ``Exchange`` through the
pipeline (``ingress.pipeline.pipeline``), HTTP out.

For every request the middleware pins the runtime current now (the
request keeps it to its end, whatever snapshot is applied meanwhile).  A
``/v1`` request is first checked by load shedding — before its body is
read or its key checked, so a shed costs next to nothing — then becomes an
exchange: its handler names the endpoint and runs the stage list; a path or
method the router does not know still passes ``receipt`` (it is on record,
and answered in the caller's grammar).  Everything else (``/healthz``,
``/metrics``, the admin endpoints) is a plain handler.
"""

from __future__ import annotations

import logging
import time

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler

from ingress.gateway.connection import SERVER
from ingress.pipeline import errors, record
from ingress.pipeline.admission import RETRY_AFTER_S, shed_body
from ingress.pipeline.body import read_body
from ingress.pipeline.endpoint import API_PREFIXES, ENDPOINTS, Endpoint, gemini_endpoint
from ingress.pipeline.errors import GatewayError, caller_grammar
from ingress.pipeline.exchange import REQUEST_ID_HEADER, ClientGone, Exchange
from ingress.pipeline.metrics import INFLIGHT, REQUESTS, SHED
from ingress.pipeline.pipeline import READ, chain, run_model_call, run_read
from ingress.pipeline.runtime import Node, Runtime
from ingress.pipeline.stages.receipt import receipt
from ingress.translate.grammar import Grammar
from streams.events import uuid7

log = logging.getLogger("nexus.gateway")

NODE = web.AppKey("nexus_gateway_node", Node)
RUNTIME = web.RequestKey("nexus_gateway_runtime", Runtime)
EXCHANGE = web.RequestKey("nexus_exchange", Exchange)


class Inbound:
    __slots__ = ("client_ip", "headers", "method", "path", "query", "request")

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.method = request.method
        self.path = request.path
        self.query = request.query_string
        self.headers = request.headers
        self.client_ip = request.remote or ""

    async def body(self, limit: int) -> bytes:
        return await read_body(self.request, limit)


class Outbound:
    """The answer as aiohttp wants it: a ``web.Response`` the handler
    returns, or a ``web.StreamResponse`` prepared and written here."""

    __slots__ = ("request", "response")

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.response: web.StreamResponse | None = None

    @property
    def started(self) -> bool:
        return self.response is not None

    @property
    def status(self) -> int:
        return self.response.status if self.response is not None else 0

    async def send(self, status: int, headers: dict[str, str], body: bytes, *, close: bool = False) -> None:
        content_type = headers.pop("Content-Type", "application/json")
        resp = web.Response(status=status, body=body, headers=headers, content_type=content_type)
        if close:
            resp.force_close()  # what the caller sent was not read to its end
        self.response = resp

    async def start(self, status: int, headers: dict[str, str]) -> _Writer:
        resp = web.StreamResponse(status=status, headers=headers)
        self.response = resp
        try:
            await resp.prepare(self.request)
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            raise ClientGone from None
        return _Writer(resp)


class _Writer:
    __slots__ = ("resp",)

    def __init__(self, resp: web.StreamResponse) -> None:
        self.resp = resp

    async def write(self, data: bytes) -> None:
        try:
            await self.resp.write(data)
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            raise ClientGone from None

    async def end(self) -> None:
        try:
            await self.resp.write_eof()
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            raise ClientGone from None


def _shed(rt: Runtime, request: web.Request, reason: str, started: float) -> web.Response:
    """429 + Retry-After in the caller's format, and one compact event: a
    shed must stay far cheaper than a served request."""
    SHED.labels(reason).inc()
    REQUESTS.labels("429", "").inc()
    request_id = uuid7()
    try:
        record.shed(rt.publisher, rt.node, request_id, started, reason)
    except Exception:  # a broken sink costs the event, never the answer
        log.exception("could not record a shed request")
    grammar = caller_grammar(request.path, "anthropic-version" in request.headers)
    return web.Response(
        status=429,
        body=shed_body(grammar),
        content_type="application/json",
        headers={"Retry-After": str(RETRY_AFTER_S), "Server": SERVER, REQUEST_ID_HEADER: request_id},
    )


def _http_error(request: web.Request, exc: web.HTTPException, rt: Runtime) -> GatewayError:
    if exc.status == 404:
        return errors.unknown_route(request.method, request.path)
    if exc.status == 405:
        return errors.method_not_allowed(request.method)
    if exc.status == 413:
        return errors.too_large(rt.max_body_bytes)
    return GatewayError(
        exc.status, "invalid_request_error", "http_error", exc.reason or "Bad request.", stage="route"
    )


@web.middleware
async def front(request: web.Request, handler: Handler) -> web.StreamResponse:
    node = request.app[NODE]
    rt = request[RUNTIME] = node.current.acquire()
    try:
        if not request.path.startswith(API_PREFIXES):
            # Operations (health, metrics, the Hub's feedback): not metered,
            # not on record; errors still in the caller's format.
            resp: web.StreamResponse
            try:
                resp = await handler(request)
            except GatewayError as exc:
                resp = _plain_error(exc, caller_grammar(request.path))
            except web.HTTPException as exc:
                resp = _plain_error(_http_error(request, exc, rt), caller_grammar(request.path))
                if exc.status == 405 and "Allow" in exc.headers:
                    resp.headers["Allow"] = exc.headers["Allow"]
            if not resp.prepared:
                resp.headers["Server"] = SERVER
                resp.headers[REQUEST_ID_HEADER] = uuid7()
            return resp
        # Before anything else (body, auth, hooks): shedding must be cheap.
        shed = node.admission.check(node.inflight)
        if shed is not None:
            return _shed(rt, request, shed, time.perf_counter())
        node.inflight += 1
        INFLIGHT.inc()
        try:
            return await _exchange(request, handler, rt)
        finally:
            node.inflight -= 1
            INFLIGHT.dec()
    finally:
        rt.release()


async def _exchange(request: web.Request, handler: Handler, rt: Runtime) -> web.StreamResponse:
    outbound = Outbound(request)
    grammar = caller_grammar(request.path, "anthropic-version" in request.headers)
    ex = request[EXCHANGE] = Exchange(uuid7(), rt, Inbound(request), outbound, grammar)
    allow = ""
    try:
        await handler(request)
    except web.HTTPException as exc:
        # No route for it: through receipt all the same, so it is on record
        # and answered in the caller's grammar.
        err = _http_error(request, exc, rt)
        allow = exc.headers.get("Allow", "") if exc.status == 405 else ""

        async def refuse(ex: Exchange, next: object) -> None:
            raise err

        await chain((receipt, refuse))(ex)
    response = outbound.response
    if response is None:  # nothing was answered (cannot happen: receipt answers errors)
        log.error("request %s ended without an answer", ex.request_id)
        response = _plain_error(errors.internal(), ex.grammar)
    response.headers["Server"] = SERVER
    if allow:
        response.headers["Allow"] = allow
    return response


def _plain_error(err: GatewayError, grammar: Grammar) -> web.Response:
    resp = web.Response(
        status=err.status,
        body=grammar.error_body(err.failure()),
        content_type="application/json",
        headers={**err.headers(), "Server": SERVER},
    )
    if err.close:
        resp.force_close()
    return resp


def model_call(name: str) -> Handler:
    """The handler of a model-call endpoint: the exchange through every stage."""
    spec = ENDPOINTS[name]

    async def handle(request: web.Request) -> web.StreamResponse:
        ex = request[EXCHANGE]
        _name(ex, spec)
        await run_model_call(ex)
        return _placeholder

    return handle


async def gemini_call(request: web.Request) -> web.StreamResponse:
    """The handler of a Gemini model URL: the method after the model's
    colon names the endpoint (generateContent, streamGenerateContent,
    countTokens)."""
    spec = gemini_endpoint(request.path)
    if spec is None:
        raise web.HTTPNotFound()
    ex = request[EXCHANGE]
    _name(ex, spec)
    await run_model_call(ex)
    return _placeholder


def read(name: str, anthropic: str | None = None) -> Handler:
    """The handler of a read of the caller's own view (models, usage); with
    ``anthropic``, the spec for a caller that sends anthropic-version."""
    spec = ENDPOINTS[name]
    alt = ENDPOINTS[anthropic] if anthropic is not None else None

    async def handle(request: web.Request) -> web.StreamResponse:
        ex = request[EXCHANGE]
        chosen = alt if alt is not None and "anthropic-version" in request.headers else spec
        _name(ex, chosen)
        await run_read(ex)
        return _placeholder

    return handle


def _name(ex: Exchange, spec: Endpoint) -> None:
    ex.spec = spec
    ex.endpoint = spec.name
    ex.grammar = spec.grammar


# What a /v1 handler returns: the middleware answers with the exchange's
# own response (what the stages wrote).
_placeholder = web.Response(status=500)

__all__ = ["EXCHANGE", "NODE", "READ", "RUNTIME", "front", "gemini_call", "model_call", "read"]
