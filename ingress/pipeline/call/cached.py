"""A Gemini cached content stored (``POST .../cachedContents``) or updated
(``PATCH .../cachedContents/{id}``) through the compliance proxy: the body,
as the request hooks left it, goes to the URL the caller addressed (its
query kept, but a ``?key=``, which travels as ``x-goog-api-key``), and
Google's answer (the cache's metadata: its name, model, expiry, token
count; no model output) is relayed as it came.  Nothing is billed here:
Google bills the storage to the caller's own account, and the tokens are
billed on the generateContent calls that use the cache."""

from __future__ import annotations

import msgspec

from adapters.base import CodecError, WireRequest
from adapters.canonical import CanonicalError
from ingress.pipeline import errors, record
from ingress.pipeline.call.unary import exchange, guard, unreadable
from ingress.pipeline.exchange import Exchange, send_json


def _query(query: str) -> str:
    kept = [p for p in query.split("&") if p and p.partition("=")[0] != "key"]
    return "?" + "&".join(kept) if kept else ""


async def cached_contents_call(ex: Exchange) -> None:
    route, upstream = ex.route, ex.upstream
    assert route is not None and upstream is not None
    if ex.passthrough is None:
        # Only an intercepted call has a host to store the cache at.
        raise errors.unknown_route(ex.inbound.method, ex.inbound.path)
    target = route.target
    wire = WireRequest(
        method=ex.inbound.method,
        url=f"{target.base_url.rstrip('/')}{ex.inbound.path}{_query(ex.inbound.query)}",
        headers={"content-type": "application/json", **target.headers},
        body=ex.raw,
    )
    guard(upstream, wire.url)
    payload, upstream_ms = await exchange(ex, upstream, wire, ex.codec.normalise_error)
    try:
        answer = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        answer = None
    if not isinstance(answer, dict):
        bad = CanonicalError(
            code="upstream_error", message="The provider's answer is unreadable.", status=502
        )
        raise unreadable(ex, upstream_ms, CodecError(bad))
    record.upstream_result(ex, status=200, upstream_ms=upstream_ms)
    record.completed(ex)
    await send_json(ex, payload)
