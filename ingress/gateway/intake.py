"""What every /v1 POST endpoint does before talking to a provider:
authenticate, read the body under the limit, parse it, record it, validate
it, resolve the model and check the key may use it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import msgspec
from aiohttp import web

from adapters.base import CodecError
from ingress.gateway import errors, recording
from ingress.gateway.auth import authenticate, may_use
from ingress.gateway.body import read_body
from ingress.gateway.routed import choose
from ingress.gateway.state import CTX, STATE, GatewayState, RequestContext
from ingress.gateway.targets import Route
from ingress.upstream import Upstream
from streams.config import Model

T = TypeVar("T")

_any: msgspec.json.Decoder[Any] = msgspec.json.Decoder()


class Admitted(Generic[T]):
    __slots__ = ("body", "ctx", "model", "parsed", "raw", "route", "state", "upstream")

    def __init__(
        self,
        state: GatewayState,
        ctx: RequestContext,
        body: dict[str, Any],
        parsed: T,
        model: Model,
        upstream: Upstream,
        route: Route,
        raw: bytes,
    ) -> None:
        self.state = state
        self.ctx = ctx
        self.body = body  # the caller's JSON object, for the passthrough
        self.parsed = parsed  # the canonical request, for validation and accounting
        self.model = model
        self.upstream = upstream
        self.route = route  # the codec and target that serve this model
        self.raw = raw  # the caller's body as received


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
    text = str(exc).replace("`$.", "`").replace("`$`", "the body")
    return f"Invalid request: {text[:300]}"


async def admit(
    request: web.Request,
    *,
    endpoint: str,
    kind: str,
    decode: Callable[[bytes], T],
    check: Callable[[T], None] | None = None,
    key_header: str | None = None,
) -> Admitted[T]:
    """``decode`` may raise msgspec.ValidationError or CodecError (both a
    400 in the caller's grammar); ``key_header`` is a route's native
    virtual-key carrier."""
    state = request.app[STATE]
    ctx = request[CTX]
    ctx.endpoint = endpoint
    snapshot = state.snapshot
    key = authenticate(request.headers, snapshot, key_header)
    ctx.set_key(key)
    raw = await read_body(request, state.max_body_bytes)
    try:
        body: Any = _any.decode(raw)
    except msgspec.DecodeError:
        body = None
        invalid: errors.GatewayError | None = errors.invalid_json()
    else:
        invalid = None if isinstance(body, dict) else errors.not_an_object()
    if isinstance(body, dict):
        requested = body.get("model")
        ctx.requested_model = requested[:200] if isinstance(requested, str) else ""
        ctx.stream = body.get("stream") is True
    recording.received(state, ctx, request, raw)
    if invalid is not None:
        raise invalid
    assert isinstance(body, dict)
    if not ctx.requested_model:
        raise errors.missing_model()
    try:
        parsed = decode(raw)
    except msgspec.ValidationError as exc:
        raise errors.invalid_request(_message(exc), _param(exc)) from None
    except CodecError as exc:
        raise errors.from_canonical(exc.error, stage="validate") from None
    if check is not None:
        check(parsed)

    # A routing rule's first candidate (already filtered by the key's
    # allowed models), else the model as named.
    routed = choose(request, ctx, key, kind)
    model = routed or snapshot.models.get(ctx.requested_model)
    if model is None or model.kind != kind:
        raise errors.unknown_model(ctx.requested_model)
    ctx.model = model.name
    if not may_use(key, model, model.name if routed else ctx.requested_model):
        raise errors.model_not_allowed(ctx.requested_model)
    provider = snapshot.providers[model.provider]
    ctx.provider = provider.name
    ctx.provider_model = model.provider_model or model.name
    route = state.routes[model.name]
    if route.codec is None:
        raise errors.unsupported_provider(provider.kind)
    upstream = state.upstreams.get(provider.name)
    await route.refresh(upstream.session, state.request_timeout_s)
    return Admitted(state, ctx, body, parsed, model, upstream, route, raw)
