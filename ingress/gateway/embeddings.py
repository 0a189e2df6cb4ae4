"""``POST /v1/embeddings``: the caller's JSON with the model rewritten,
usage read from the provider's answer (estimated when it sends none)."""

from __future__ import annotations

import msgspec
from aiohttp import web

from adapters.openai.codec import decode_embeddings
from adapters.openai.wire import EmbeddingRequestWire
from ingress.gateway import errors
from ingress.gateway.intake import admit
from ingress.gateway.unary import forward_unary
from streams.events import Usage

_request = msgspec.json.Decoder(EmbeddingRequestWire)
_encoder = msgspec.json.Encoder()


def _check(req: EmbeddingRequestWire) -> None:
    if req.input == "" or req.input == []:
        raise errors.invalid_request("input must not be empty.", "input")


def _estimate(req: EmbeddingRequestWire) -> int:
    items = [req.input] if isinstance(req.input, str) else req.input
    return sum(
        (len(i) + 3) // 4 if isinstance(i, str) else (len(i) if isinstance(i, list) else 1) for i in items
    )


async def embeddings(request: web.Request) -> web.StreamResponse:
    a = await admit(request, endpoint="embeddings", kind="embedding", decode=_request.decode, check=_check)
    if a.ctx.stream:
        raise errors.invalid_request("embeddings cannot be streamed.", "stream")
    a.body["model"] = a.ctx.provider_model
    wire = _encoder.encode(a.body)
    req = a.parsed

    def account(payload: bytes) -> tuple[Usage, bool]:
        usage = decode_embeddings(payload).usage
        if usage is None:
            n = _estimate(req)
            return Usage(prompt_tokens=n, total_tokens=n), True
        return Usage(
            prompt_tokens=usage.prompt_tokens, total_tokens=usage.total_tokens or usage.prompt_tokens
        ), False

    return await forward_unary(a.state, a.ctx, a.upstream.embeddings_url, a.upstream, wire, a.model, account)
