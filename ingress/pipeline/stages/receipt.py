"""The first stage: a request is on record from the moment it arrived, and
whatever happens after, the caller gets an answer in its own grammar and
the request an outcome.

- ``RequestReceived`` is noted before the key is checked or the body read
  (a refused request leaves a row saying what came in), and emitted with
  the request's first event.
- A ``GatewayError`` from any stage is recorded (``RequestFailed``) and
  answered in the caller's grammar; anything unexpected is a logged 500
  with no internals.
- A caller that goes away (the front end cancels the request) is a 499,
  billed for what a provider already worked on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ingress.pipeline import errors, record
from ingress.pipeline.errors import GatewayError
from ingress.pipeline.exchange import ClientGone, Exchange, Next, answer_headers
from ingress.pipeline.metrics import LATENCY, REQUESTS, child

log = logging.getLogger("nexus.gateway")


async def receipt(ex: Exchange, next: Next) -> None:
    record.received(ex)
    try:
        await next(ex)
    except GatewayError as exc:
        _failed(ex, exc)
        await answer_error(ex, exc)
    except asyncio.CancelledError:
        # The caller closed the connection: a 499, with what it had cost; the
        # cancellation goes on, cutting the upstream call and freeing the
        # slot and the reservation on its way out.
        try:
            record.abandoned(ex)
        except Exception:
            log.exception("could not record the abandonment of request %s", ex.request_id)
        child(REQUESTS, "499", ex.model_name).inc()
        raise
    except ClientGone:
        _failed(ex, record.CLIENT_GONE)
    except Exception:
        log.exception("unexpected error serving request %s", ex.request_id)
        internal = errors.internal()
        _failed(ex, internal)
        await answer_error(ex, internal)
    status = ex.outcome_status or ex.outbound.status
    child(REQUESTS, str(status), ex.model_name).inc()
    child(LATENCY, ex.model_name, "true" if ex.stream else "false").observe(ex.elapsed_ms() / 1000)


def _failed(ex: Exchange, err: GatewayError) -> None:
    # Error handling must not fail in turn: a broken sink costs the event,
    # never the caller's response.
    try:
        record.failed(ex, err)
    except Exception:
        log.exception("could not record the failure of request %s", ex.request_id)
    ex.outcome_status = ex.outcome_status or err.status


async def answer_error(ex: Exchange, err: GatewayError) -> None:
    """The error in the caller's grammar; nothing when an answer already
    began (a stream ends with its own error frame, written by the call)."""
    if ex.outbound.started:
        return
    headers = answer_headers(ex)
    headers["Content-Type"] = "application/json"
    headers.update(err.headers())
    with contextlib.suppress(ClientGone):
        await ex.outbound.send(err.status, headers, ex.grammar.error_body(err.failure()), close=err.close)
