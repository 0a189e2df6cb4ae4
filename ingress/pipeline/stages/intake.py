"""What the caller asked for: the body read under the limit and parsed in
the endpoint's grammar (a malformed body is the caller's 400 naming the
field, never a 500), the model it names resolved (a routing rule's first
candidate, else the model as named), the key's scope checked, and the
route that serves the model: its codec, target and upstream session."""

from __future__ import annotations

import msgspec

from adapters.base import CodecError
from adapters.canonical import ChatRequest, EmbeddingRequest
from adapters.wirekit.jsonio import shape_error
from ingress.pipeline import errors, record
from ingress.pipeline.body import parse_json
from ingress.pipeline.exchange import Exchange, Next
from ingress.pipeline.stages.authentication import may_use
from ingress.pipeline.stages.routing import choose
from ingress.pipeline.target import aim

_encoder = msgspec.json.Encoder()


def _param(exc: msgspec.ValidationError) -> str | None:
    # msgspec: "Expected `array`, got `str` - at `$.messages[0].role`" -> "messages"
    text = str(exc)
    if text.startswith("Object missing required field `"):
        return text.split("`")[1]
    if "- at `$." not in text:
        return None
    path = text.rsplit("- at `$.", 1)[1].rstrip("`")
    return path.split("[")[0].split(".")[0] or None


def _message(exc: msgspec.ValidationError) -> str:
    text = shape_error(exc).replace("`$.", "`").replace("`$`", "the body")
    return f"Invalid request: {text[:300]}"


def chat_of(parsed: object) -> ChatRequest | None:
    """The canonical chat request of an endpoint's parse: a ChatRequest, the
    Responses endpoint's (chat or None, why not) pair, or none (embeddings)."""
    if isinstance(parsed, ChatRequest):
        return parsed
    if isinstance(parsed, tuple) and parsed and isinstance(parsed[0], ChatRequest):
        return parsed[0]
    return None


def redacted(ex: Exchange) -> None:
    """A request hook rewrote ``ex.body`` in place: the bytes and the
    canonical request follow, so nothing downstream (the forwarded body, a
    translation, the cache key, the record) sees the original."""
    spec = ex.spec
    assert spec is not None and spec.decode is not None
    ex.raw = _encoder.encode(ex.body)
    ex.parsed = decode(ex, ex.raw)
    ex.chat = chat_of(ex.parsed)


async def intake(ex: Exchange, next: Next) -> None:
    assert ex.key is not None
    await read_request(ex)
    spec = ex.spec
    assert spec is not None
    # A routing rule's first candidate (already filtered by the key's
    # allowed models), else the model as named.
    snapshot = ex.rt.snapshot
    routed = choose(ex, spec.kind)
    model = routed or snapshot.models.get(ex.requested_model)
    if model is None or model.kind != spec.kind:
        raise errors.unknown_model(ex.requested_model)
    ex.model = model  # on record even when the key may not use it
    if not may_use(ex.key, model, model.name if routed else ex.requested_model):
        raise errors.model_not_allowed(ex.requested_model)
    await aim(ex, model.name)
    await next(ex)


async def read_request(ex: Exchange) -> None:
    """The body under the limit, parsed in the endpoint's grammar: the
    model named, the stream flag, the canonical decode (``ex.parsed``,
    ``ex.chat``); a malformed body is the caller's 400."""
    spec = ex.spec
    assert spec is not None and spec.decode is not None
    rt = ex.rt
    raw = await ex.inbound.body(rt.max_body_bytes)
    ex.raw = raw
    body: object = None
    invalid: errors.GatewayError | None = None
    try:
        body = parse_json(raw)
    except errors.GatewayError as exc:
        invalid = exc
    else:
        invalid = None if isinstance(body, dict) else errors.not_an_object()
    addressed: tuple[str, bool] | None = None
    if spec.addressed is not None:
        try:
            addressed = spec.addressed(ex.inbound.path, ex.inbound.query)
        except CodecError as exc:
            invalid = invalid or errors.from_canonical(exc.error, stage="validate")
        else:
            ex.requested_model, ex.stream = addressed[0][:200], addressed[1]
    if isinstance(body, dict):
        if spec.addressed is None:
            requested = body.get("model")
            ex.requested_model = requested[:200] if isinstance(requested, str) else ""
            ex.stream = body.get("stream") is True
        ex.body = body
    record.body_read(ex, raw)
    if invalid is not None:
        raise invalid
    if not ex.requested_model and spec.needs_model:
        raise errors.missing_model()
    if ex.stream and not spec.streams:
        raise errors.invalid_request(f"{spec.name} cannot be streamed.", "stream")
    try:
        ex.parsed = decode(ex, raw)
    except msgspec.ValidationError as exc:
        raise errors.invalid_request(_message(exc), _param(exc)) from None
    except CodecError as exc:
        raise errors.from_canonical(exc.error, stage="validate") from None
    if spec.check is not None:
        spec.check(ex.parsed)
    ex.chat = chat_of(ex.parsed)


def decode(ex: Exchange, raw: bytes) -> object:
    """The endpoint's canonical decode of ``raw``; where the URL names the
    model and the stream (Gemini), they are set from it."""
    spec = ex.spec
    assert spec is not None and spec.decode is not None
    parsed = spec.decode(raw)
    if spec.addressed is not None:
        if isinstance(parsed, ChatRequest):
            parsed.model = ex.requested_model
            parsed.stream = ex.stream or None
        elif isinstance(parsed, EmbeddingRequest):
            parsed.model = ex.requested_model
    return parsed
