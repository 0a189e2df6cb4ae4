"""``POST /internal/cache/semantic-feedback`` (admin token): a bad answer
of the semantic cache is evicted on every node (``{"entry": "<id>"}``)."""

from __future__ import annotations

import logging

import msgspec
from aiohttp import web

from ingress.gateway.front import RUNTIME
from ingress.pipeline.errors import GatewayError
from ingress.pipeline.stages.authentication import require_admin
from ingress.pipeline.stages.semantic import entry_id_ok

log = logging.getLogger("nexus.cache.semantic")


class Feedback(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    entry: str  # the X-Nexus-Cache-Entry of a semantic hit
    verdict: str = "bad"


_feedback = msgspec.json.Decoder(Feedback)


async def feedback(request: web.Request) -> web.Response:
    """``POST /internal/cache/semantic-feedback`` (admin token): a bad
    answer is evicted on every node (``{"entry": "<id>"}``)."""
    require_admin(request.headers, request[RUNTIME].routing.admin_token)
    try:
        body = _feedback.decode(await request.read())
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise GatewayError(
            400, "invalid_request_error", "invalid_request", f"Invalid request: {exc}"
        ) from None
    if body.verdict != "bad" or not entry_id_ok(body.entry):
        raise GatewayError(
            400, "invalid_request_error", "invalid_request", "verdict must be 'bad' with an entry id"
        )
    rt = request[RUNTIME].cache
    sem = rt.semantic
    if sem is None:
        raise GatewayError(
            404, "invalid_request_error", "semantic_cache_off", "The semantic cache is not on."
        )
    exact_prefix = rt.exact.prefix if rt.exact is not None else ""
    try:
        evicted = await sem.poison(body.entry, exact_prefix)
    except Exception as exc:
        log.warning("semantic cache poison failed (%s)", type(exc).__name__)
        raise GatewayError(503, "api_error", "cache_unavailable", "The cache store is unavailable.") from None
    return web.json_response({"entry": body.entry, "evicted": evicted})
