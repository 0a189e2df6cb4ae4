"""Around every request: a request id, the admission gates (admission.py), the
one place errors become OpenAI-shaped responses (including anything
unexpected: a 500 with no internals, logged with its request id), and the
request metrics."""

from __future__ import annotations

import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from ingress.gateway import errors, recording
from ingress.gateway.admission import shed_response
from ingress.gateway.errors import GatewayError
from ingress.gateway.metrics import INFLIGHT, LATENCY, REQUESTS, child
from ingress.gateway.state import CTX, STATE, GatewayState, RequestContext
from ingress.translate.grammar import OPENAI_CHAT, Grammar
from streams.events import uuid7

log = logging.getLogger("nexus.gateway")

REQUEST_ID_HEADER = "x-nexus-request-id"


def error_response(err: GatewayError, grammar: Grammar = OPENAI_CHAT) -> web.Response:
    """The error in the caller's grammar (OpenAI's shape unless the route
    speaks another, e.g. Anthropic's on /v1/messages)."""
    resp = web.Response(
        status=err.status,
        body=grammar.error_body(err.failure()),
        content_type="application/json",
        headers=err.headers(),
    )
    if err.code == "request_too_large":
        resp.force_close()  # the rest of the body was never read
    return resp


def _http_error(request: web.Request, exc: web.HTTPException) -> GatewayError:
    if exc.status == 404:
        return errors.unknown_route(request.method, request.path)
    if exc.status == 405:
        return errors.method_not_allowed(request.method)
    if exc.status == 413:
        return errors.too_large(request.app[STATE].max_body_bytes)
    return GatewayError(
        exc.status, "invalid_request_error", "http_error", exc.reason or "Bad request.", stage="route"
    )


def _record_failure(state: GatewayState, ctx: RequestContext, err: GatewayError) -> None:
    # Error handling must not fail in turn: a broken sink costs the event,
    # never the caller's response.
    try:
        recording.failed(state, ctx, err)
    except Exception:
        log.exception("could not record the failure of request %s", ctx.request_id)


@web.middleware
async def gateway_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE]
    ctx = RequestContext(uuid7())
    request[CTX] = ctx
    gated = request.path.startswith("/v1/")
    resp: web.StreamResponse
    if gated:
        # Before anything else (body, auth, hooks): shedding must be cheap.
        shed = state.admission.check(state.inflight)
        if shed is not None:
            REQUESTS.labels("429", "").inc()
            return shed_response(request, shed)
        state.inflight += 1
        INFLIGHT.inc()
    try:
        resp = await handler(request)
    except GatewayError as exc:
        _record_failure(state, ctx, exc)
        resp = error_response(exc, ctx.grammar)
    except web.HTTPException as exc:
        resp = error_response(_http_error(request, exc), ctx.grammar)
        if exc.status == 405 and "Allow" in exc.headers:
            resp.headers["Allow"] = exc.headers["Allow"]
    except Exception:
        log.exception("unexpected error serving request %s", ctx.request_id)
        internal = errors.internal()
        _record_failure(state, ctx, internal)
        resp = error_response(internal, ctx.grammar)
    finally:
        if gated:
            state.inflight -= 1
            INFLIGHT.dec()
    status = ctx.outcome_status or resp.status
    child(REQUESTS, str(status), ctx.model).inc()
    if gated:
        child(LATENCY, ctx.model, "true" if ctx.stream else "false").observe(
            time.perf_counter() - ctx.started
        )
    return resp


async def stamp_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every response, streams and errors included, names its request id and
    (once known) where it was routed."""
    ctx = request.get(CTX)
    if ctx is None:
        return
    response.headers[REQUEST_ID_HEADER] = ctx.request_id
    if ctx.provider:
        response.headers["X-Nexus-Routed-Provider"] = ctx.provider
        response.headers["X-Nexus-Routed-Model"] = ctx.provider_model
