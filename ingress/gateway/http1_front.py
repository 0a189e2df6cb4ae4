"""The gateway's second front end: the lean HTTP/1.1 layer
(``ingress.http1.protocol``) in, an ``Exchange`` through the pipeline, HTTP
out (issue 17).  Chosen with the ``gateway_http`` setting
(``NEXUS_GATEWAY_HTTP``, the default); ``aiohttp`` selects ``front.py``.

It does what ``front.py``'s middleware and aiohttp's router do, in the
same words: the runtime pinned for the request's life; load shedding
before anything is read; the ``/v1`` routes through the stage lists, a
path or method no route has through ``receipt`` all the same (on record,
answered in the caller's grammar, ``Allow`` on a 405); ``Server: nexus``
and a request id on every answer; a caller who leaves cancels its request
(a 499).  The few routes outside ``/v1`` (health, metrics, the admin
endpoints) are aiohttp handlers, called with a request of this layer's
(they read its headers, its body and the runtime) and their
``web.Response`` written back.

The difference is the cost: no aiohttp request, response, middleware or
router objects, no payload stream, one task per request; the parser is the
same llhttp.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web

from ingress.gateway.breakglass import delete_break_glass, get_break_glass, put_break_glass
from ingress.gateway.connection import KEEPALIVE_TIMEOUT_S, SERVER
from ingress.gateway.feedback import feedback
from ingress.gateway.front import RUNTIME
from ingress.gateway.ops import healthz, metrics, tenant_metrics
from ingress.gateway.routing_api import explain
from ingress.http1.protocol import DECODED, BodyError, Call, Limits, ServerConnection
from ingress.pipeline import errors, record
from ingress.pipeline.admission import RETRY_AFTER_S, shed_body
from ingress.pipeline.endpoint import API_PREFIXES, ENDPOINTS, Endpoint, gemini_endpoint
from ingress.pipeline.errors import GatewayError, caller_grammar
from ingress.pipeline.exchange import REQUEST_ID_HEADER, ClientGone, Exchange
from ingress.pipeline.metrics import INFLIGHT, REQUESTS, SHED
from ingress.pipeline.pipeline import chain, run_model_call, run_read
from ingress.pipeline.runtime import Node, Runtime
from ingress.pipeline.stages.receipt import receipt
from ingress.translate.grammar import Failure
from streams.events import uuid7

log = logging.getLogger("nexus.gateway")

_SERVER_LINE = f"Server: {SERVER}\r\n".encode("latin-1")
_JSON = "application/json"


class GatewayCall(Call):
    """A request of the lean layer as the pipeline's ``Inbound`` and
    ``Outbound`` at once (one object per request)."""

    __slots__ = ()
    server = _SERVER_LINE
    gone = ClientGone

    @property
    def client_ip(self) -> str:
        return self.peer

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]

    async def body(self, limit: int) -> bytes:
        encoding = (self.headers.get("content-encoding") or "").strip().lower()
        if encoding not in DECODED:
            self.close_after = True
            raise errors.unsupported_encoding()
        try:
            return await self.read(limit)
        except BodyError as exc:
            raise _body_error(exc.kind, limit) from None


def _body_error(kind: str, limit: int) -> GatewayError:
    # The words of read_body (pipeline/body.py) for the same failures.
    if kind == "too_large":
        return errors.too_large(limit)
    if kind == "encoding":
        return errors.bad_body_encoding("does not decode with its Content-Encoding")
    if kind == "framing":
        return errors.bad_body_encoding("has broken chunked Transfer-Encoding")
    return errors.bad_body_encoding("ended before its declared length")


# --- the routes ------------------------------------------------------------------

# path -> method -> (endpoint, its spec for an anthropic-version caller, a
# model call?)
_Route = tuple[Endpoint, Endpoint | None, bool]


def _v1_routes() -> dict[str, dict[str, _Route]]:
    def call(name: str) -> dict[str, _Route]:
        return {"POST": (ENDPOINTS[name], None, True)}

    def read(name: str, anthropic: str | None = None) -> dict[str, _Route]:
        route = (ENDPOINTS[name], ENDPOINTS[anthropic] if anthropic else None, False)
        return {"GET": route, "HEAD": route}

    return {
        "/v1/chat/completions": call("chat"),
        "/v1/messages": call("messages"),
        "/v1/messages/count_tokens": call("count_tokens"),
        "/v1/responses": call("responses"),
        "/v1/embeddings": call("embeddings"),
        "/v1/models": read("models", "models_anthropic"),
        "/v1/usage": read("usage"),
    }


OpsHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_OPS: dict[str, dict[str, OpsHandler]] = {
    "/healthz": {"GET": healthz, "HEAD": healthz},
    "/metrics": {"GET": metrics, "HEAD": metrics},
    "/metrics/tenants": {"GET": tenant_metrics, "HEAD": tenant_metrics},
    "/internal/routing/explain": {"POST": explain},
    "/internal/cache/semantic-feedback": {"POST": feedback},
    "/internal/break-glass": {"GET": get_break_glass, "PUT": put_break_glass, "DELETE": delete_break_glass},
}


def _allow(methods: dict[str, Any]) -> str:
    return ",".join(sorted(methods))


class _OpsRequest:
    """What the operations handlers read of a request: headers, body, the
    runtime (``request[RUNTIME]``)."""

    __slots__ = ("_call", "_rt", "headers")

    def __init__(self, call: GatewayCall, rt: Runtime) -> None:
        self._call = call
        self._rt = rt
        self.headers = call.headers

    def __getitem__(self, key: object) -> Runtime:
        if key is RUNTIME:
            return self._rt
        raise KeyError(key)

    async def read(self) -> bytes:
        return await self._call.body(self._rt.max_body_bytes)

    @property
    def remote(self) -> str:
        return self._call.peer


class Front:
    """The lean front end of one node: makes each connection's protocol."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.routes = _v1_routes()
        self._conns: weakref.WeakSet[ServerConnection] = weakref.WeakSet()
        gw = node.current.snapshot.config.gateway
        self.limits = Limits(header_timeout_s=gw.header_timeout_s, idle_timeout_s=KEEPALIVE_TIMEOUT_S)

    def connection(self) -> ServerConnection:
        conn = ServerConnection(self.handle, _refusal, self.limits, GatewayCall)
        self._conns.add(conn)
        return conn

    async def close(self, grace_s: float = 10.0) -> None:
        """Stop serving: idle connections close at once, a request in
        progress may finish within ``grace_s`` (then it is cancelled)."""
        conns = list(self._conns)
        for c in conns:
            c.shutdown()
        busy = [c.task for c in conns if c.task is not None and not c.task.done()]
        if busy:
            _done, pending = await asyncio.wait(busy, timeout=grace_s)
            for t in pending:
                t.cancel()
        for c in conns:
            if c.transport is not None and not c.lost:
                c.transport.close()

    async def handle(self, call: Call) -> None:
        assert isinstance(call, GatewayCall)
        node = self.node
        rt = node.current.acquire()
        try:
            if not call.path.startswith(API_PREFIXES):
                await self._ops(call, rt)
                return
            # Before anything else (body, auth, hooks): shedding must be cheap.
            shed = node.admission.check(node.inflight)
            if shed is not None:
                await self._shed(call, rt, shed)
                return
            node.inflight += 1
            INFLIGHT.inc()
            try:
                await self._exchange(call, rt)
            finally:
                node.inflight -= 1
                INFLIGHT.dec()
        finally:
            rt.release()

    async def _exchange(self, call: GatewayCall, rt: Runtime) -> None:
        anthropic_version = "anthropic-version" in call.headers
        ex = Exchange(uuid7(), rt, call, call, caller_grammar(call.path, anthropic_version))
        methods = self.routes.get(call.path)
        if methods is None:
            gemini = gemini_endpoint(call.path)  # the model is in the path: no fixed route
            methods = {"POST": (gemini, None, True)} if gemini is not None else None
        route = methods.get(call.method) if methods is not None else None
        if route is None:
            # No route for it: through receipt all the same, so it is on
            # record and answered in the caller's grammar.
            if methods is None:
                err = errors.unknown_route(call.method, call.path)
            else:
                err = errors.method_not_allowed(call.method)
                ex.headers_out["Allow"] = _allow(methods)

            async def refuse(ex: Exchange, next: object) -> None:
                raise err

            await chain((receipt, refuse))(ex)
        else:
            spec, alt, model_call = route
            if alt is not None and anthropic_version:
                spec = alt
            ex.spec = spec
            ex.endpoint = spec.name
            ex.grammar = spec.grammar
            await (run_model_call if model_call else run_read)(ex)
        if not call.started:  # nothing was answered (cannot happen: receipt answers errors)
            log.error("request %s ended without an answer", ex.request_id)
            err = errors.internal()
            await call.send(err.status, {"Content-Type": _JSON}, ex.grammar.error_body(err.failure()))

    async def _shed(self, call: GatewayCall, rt: Runtime, reason: str) -> None:
        """429 + Retry-After in the caller's format, and one compact event
        (front.py's ``_shed``)."""
        started = time.perf_counter()
        SHED.labels(reason).inc()
        REQUESTS.labels("429", "").inc()
        request_id = uuid7()
        try:
            record.shed(rt.publisher, rt.node, request_id, started, reason)
        except Exception:  # a broken sink costs the event, never the answer
            log.exception("could not record a shed request")
        grammar = caller_grammar(call.path, "anthropic-version" in call.headers)
        body = shed_body(grammar)
        headers = {"Content-Type": _JSON, "Retry-After": str(RETRY_AFTER_S), REQUEST_ID_HEADER: request_id}
        await call.send(429, headers, body)

    async def _ops(self, call: GatewayCall, rt: Runtime) -> None:
        """Operations (health, metrics, the admin endpoints): not metered,
        not on record; errors still in the caller's format."""
        grammar = caller_grammar(call.path)
        methods = _OPS.get(call.path)
        handler = methods.get(call.method) if methods is not None else None
        headers: dict[str, str] = {REQUEST_ID_HEADER: uuid7()}
        try:
            if methods is None:
                raise errors.unknown_route(call.method, call.path)
            if handler is None:
                headers["Allow"] = _allow(methods)
                raise errors.method_not_allowed(call.method)
            resp = await handler(cast(web.Request, _OpsRequest(call, rt)))
        except GatewayError as err:
            headers.update(err.headers())
            headers["Content-Type"] = _JSON
            await call.send(err.status, headers, grammar.error_body(err.failure()), close=err.close)
            return
        assert isinstance(resp, web.Response)
        for k, v in resp.headers.items():
            headers[k] = v
        body = resp.body
        await call.send(resp.status, headers, body if isinstance(body, bytes) else b"")


_REFUSALS = {
    400: Failure(400, "invalid_request_error", "malformed_http", "The HTTP request could not be parsed."),
    408: Failure(
        408, "invalid_request_error", "request_timeout", "The request headers did not arrive in time."
    ),
    417: Failure(
        417, "invalid_request_error", "expectation_failed", "Only Expect: 100-continue is supported."
    ),
    431: Failure(
        431,
        "invalid_request_error",
        "request_header_too_large",
        "The request line or headers exceed the gateway's limits (8,190 bytes a line, 128 headers).",
    ),
}


def _refusal(status: int, head: bytes) -> tuple[str, bytes]:
    """What the parser refused, in JSON in the caller's format, in our
    words (connection.py's ``handle_error`` for aiohttp)."""
    failure = _REFUSALS.get(status) or _REFUSALS[400]
    # "POST /v1/messages HTTP/1.1": the path, if the request line got that far.
    parts = head.split(b" ", 2)
    path = parts[1].decode("latin-1").split("?", 1)[0] if len(parts) > 2 else "/"
    grammar = caller_grammar(path, b"\nanthropic-version:" in head.lower())
    return _JSON, grammar.error_body(failure)


__all__ = ["Front", "GatewayCall"]
