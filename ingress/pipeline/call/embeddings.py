"""``POST /v1/embeddings``: an OpenAI provider gets the caller's JSON with
the model rewritten; any other embeddings provider is reached through its
codec and answered in OpenAI's shape.  Gemini's ``:embedContent`` and
``:batchEmbedContents`` are served here too, always through the codec (their
body is Google's), and answered in Google's shape; so is Vertex AI's
``:predict`` of a text embedding model, for the proxy.  Usage from the
provider's answer (estimated when it sends none)."""

from __future__ import annotations

import msgspec

from adapters.base import CodecError
from adapters.canonical import EmbeddingRequest, EmbeddingResponse
from ingress.pipeline import errors, record
from ingress.pipeline.call.unary import exchange, guard, unreadable
from ingress.pipeline.call.usage import record_response
from ingress.pipeline.exchange import Exchange, send_json
from ingress.translate import gemini_embed, vertex_predict
from ingress.translate.openai_chat import embeddings_response
from ingress.translate.shown_model import ShownModel
from streams.events import Usage

decode = msgspec.json.Decoder(EmbeddingRequest).decode
_NO_USAGE = EmbeddingResponse(data=[], model="")  # no usage reported: estimated
# How each endpoint's answer is written (OpenAI's shape otherwise).
_RENDER = {
    "embed_content": gemini_embed.embed_response,
    "batch_embed_contents": gemini_embed.batch_response,
    "vertex_predict": vertex_predict.predict_response,
}


def check(req: EmbeddingRequest) -> None:
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


async def embeddings_call(ex: Exchange) -> None:
    route, upstream, model = ex.route, ex.upstream, ex.model
    assert route is not None and upstream is not None and model is not None
    codec = ex.codec
    parsed = ex.parsed
    # A provider that serves the caller's endpoint natively (OpenAI's
    # embeddings) gets its JSON with the model rewritten (fields unknown
    # here still reach it).
    spec = ex.spec
    assert spec is not None
    native = spec.name in codec.native
    try:
        if native:
            wire = codec.encode_native(spec.name, ex.body, route.target)
        else:
            wire = codec.encode_embeddings(parsed, route.target)
    except CodecError as exc:
        raise errors.from_canonical(exc.error, stage="route") from None
    guard(upstream, wire.url)
    payload, upstream_ms = await exchange(
        ex, upstream, wire, codec.normalise_error, lambda: _usage(parsed, _NO_USAGE)[0]
    )
    try:
        resp = codec.decode_embeddings(payload, route.target)
        if native:
            body = ShownModel(ex.requested_model).document(payload)
        else:
            body = _RENDER.get(spec.name, embeddings_response)(resp, ex.requested_model)
    except CodecError as exc:
        raise unreadable(ex, upstream_ms, exc) from None
    record.upstream_result(ex, status=200, upstream_ms=upstream_ms)
    usage, estimated = _usage(parsed, resp)
    record_response(ex, model, usage, estimated=estimated)
    await send_json(ex, body)
