"""Calls the compliance proxy forwards as their callers sent them (as the
request hooks left them), for APIs whose body the pipeline screens but has
no canonical form to translate: the body goes to the URL the caller
addressed (its query kept, but a ``?key=``, which travels as
``x-goog-api-key``), and the provider's answer is relayed as it came.

- a Gemini cached content stored (``POST .../cachedContents``) or updated
  (``PATCH .../cachedContents/{id}``): the answer is the cache's metadata
  (name, model, expiry, token count; no model output).  Nothing is billed
  here: Google bills the storage to the caller's own account, and the
  tokens on the generateContent calls that use the cache;
- Vertex AI's ``:embedContent`` and ``:batchEmbedContents`` (Gemini
  embedding models): the answer is vectors, billed by the prompt tokens
  Vertex reports (estimated from the text when it reports none).
"""

from __future__ import annotations

from typing import Any

import msgspec

from adapters.base import CodecError, WireRequest
from adapters.canonical import CanonicalError, EmbeddingRequest
from ingress.pipeline import errors, record
from ingress.pipeline.call.unary import exchange, guard, unreadable
from ingress.pipeline.call.usage import record_response
from ingress.pipeline.exchange import Exchange, send_json
from streams.events import Usage


class _UsageMetadata(msgspec.Struct, rename="camel"):
    prompt_token_count: int = 0


class _Answer(msgspec.Struct, rename="camel"):
    usage_metadata: _UsageMetadata | None = None


def _query(query: str) -> str:
    kept = [p for p in query.split("&") if p and p.partition("=")[0] != "key"]
    return "?" + "&".join(kept) if kept else ""


async def _forward(ex: Exchange) -> tuple[bytes, float]:
    """The caller's body (as the hooks left it) to the URL it addressed; the
    provider's answer, checked to be a JSON object, and the upstream time."""
    route, upstream = ex.route, ex.upstream
    assert route is not None and upstream is not None
    if ex.passthrough is None:
        # Only an intercepted call has a host it addressed.
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
        answer: Any = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        answer = None
    if not isinstance(answer, dict):
        bad = CanonicalError(
            code="upstream_error", message="The provider's answer is unreadable.", status=502
        )
        raise unreadable(ex, upstream_ms, CodecError(bad))
    return payload, upstream_ms


async def cached_contents_call(ex: Exchange) -> None:
    payload, upstream_ms = await _forward(ex)
    record.upstream_result(ex, status=200, upstream_ms=upstream_ms)
    record.completed(ex)
    await send_json(ex, payload)


async def embed_as_sent_call(ex: Exchange) -> None:
    model, parsed = ex.model, ex.parsed
    assert model is not None and isinstance(parsed, EmbeddingRequest)
    payload, upstream_ms = await _forward(ex)
    record.upstream_result(ex, status=200, upstream_ms=upstream_ms)
    try:
        meta = msgspec.json.decode(payload, type=_Answer).usage_metadata
    except msgspec.ValidationError:
        meta = None
    tokens = meta.prompt_token_count if meta is not None else 0
    estimated = not tokens
    if estimated:
        texts = [parsed.input] if isinstance(parsed.input, str) else parsed.input
        tokens = sum((len(t) + 3) // 4 for t in texts if isinstance(t, str))
    record_response(ex, model, Usage(prompt_tokens=tokens, total_tokens=tokens), estimated=estimated)
    await send_json(ex, payload)
