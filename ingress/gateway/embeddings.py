"""``POST /v1/embeddings``: an OpenAI provider gets the caller's JSON with
the model rewritten; any other embeddings provider is reached through its
codec and answered in OpenAI's shape.  Usage from the provider's answer
(estimated when it sends none)."""

from __future__ import annotations

import msgspec
from aiohttp import web

from adapters.base import CodecError, WireRequest
from adapters.canonical import EmbeddingRequest, EmbeddingResponse
from adapters.openai.codec import decode_embeddings
from ingress.gateway import errors, recording
from ingress.gateway.failover import serve_routed
from ingress.gateway.forward import with_model
from ingress.gateway.intake import Admitted, admit
from ingress.gateway.pipeline import check_request, record_response
from ingress.gateway.unary import exchange, guard, unreadable
from ingress.translate.openai_out import embeddings_response
from streams.events import Usage

_request = msgspec.json.Decoder(EmbeddingRequest)


def _check(req: EmbeddingRequest) -> None:
    if req.input == "" or req.input == []:
        raise errors.invalid_request("input must not be empty.", "input")
    if isinstance(req.input, list) and not all(
        isinstance(i, str | int) or (isinstance(i, list) and all(isinstance(t, int) for t in i))
        for i in req.input
    ):
        raise errors.invalid_request("input must be a string, an array of strings or token arrays.", "input")


def _estimate(req: EmbeddingRequest) -> int:
    items = [req.input] if isinstance(req.input, str) else req.input
    return sum(
        (len(i) + 3) // 4 if isinstance(i, str) else (len(i) if isinstance(i, list) else 1) for i in items
    )


def _usage(req: EmbeddingRequest, resp: EmbeddingResponse) -> tuple[Usage, bool]:
    if resp.usage is None or not (resp.usage.prompt_tokens or resp.usage.total_tokens):
        n = _estimate(req)
        return Usage(prompt_tokens=n, total_tokens=n), True
    prompt = resp.usage.prompt_tokens or resp.usage.total_tokens
    return Usage(prompt_tokens=prompt, total_tokens=resp.usage.total_tokens or prompt), False


async def embeddings(request: web.Request) -> web.StreamResponse:
    a = await admit(request, endpoint="embeddings", kind="embedding", decode=_request.decode, check=_check)
    if a.ctx.stream:
        raise errors.invalid_request("embeddings cannot be streamed.", "stream")
    await check_request(a, None)
    # A routed model walks its candidates (retries, fallbacks, breakers).
    return await serve_routed(request, a, _serve)


async def _serve(a: Admitted[EmbeddingRequest]) -> web.StreamResponse:
    state, ctx, route = a.state, a.ctx, a.route
    codec = route.codec
    assert codec is not None
    native = route.kind == "openai"
    if native:
        wire = WireRequest(
            url=a.upstream.embeddings_url,
            headers=a.upstream.headers,
            body=with_model(a.body, ctx.provider_model),
        )
    else:
        try:
            wire = codec.encode_embeddings(a.parsed, route.target)
        except CodecError as exc:
            raise errors.from_canonical(exc.error, stage="route") from None
        guard(a.upstream, wire.url)
    payload, upstream_ms = await exchange(state, ctx, a.upstream, wire, codec.normalise_error)
    try:
        resp = decode_embeddings(payload) if native else codec.decode_embeddings(payload, route.target)
    except CodecError as exc:
        raise unreadable(state, ctx, upstream_ms, exc) from None
    recording.upstream_result(state, ctx, status=200, upstream_ms=upstream_ms)
    usage, estimated = _usage(a.parsed, resp)
    record_response(state, ctx, a.model, usage, estimated=estimated)
    body = payload if native else embeddings_response(resp, ctx.requested_model)
    return web.Response(body=body, content_type="application/json")
