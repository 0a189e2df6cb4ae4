"""Voyage AI embeddings under /voyage (POST /v1/embeddings), per
https://docs.voyageai.com/reference/embeddings-api: bearer auth, unknown
fields refused, input_type query|document|null, usage.total_tokens only;
errors are ``{"detail": ...}``."""

from __future__ import annotations

import base64
import struct
from typing import Literal

import msgspec
from aiohttp import web

from nexus.sim import text
from nexus.sim.formats import common
from nexus.sim.state import SIM_STATE

_encoder = msgspec.json.Encoder()


def error(status: int, message: str) -> web.Response:
    return web.Response(
        status=status, body=_encoder.encode({"detail": message}), content_type="application/json"
    )


class EmbedRequest(msgspec.Struct, forbid_unknown_fields=True):
    input: str | list[str]
    model: str
    input_type: Literal["query", "document"] | None = None
    truncation: bool | None = None
    output_dimension: int | None = None
    output_dtype: Literal["float", "int8", "uint8", "binary", "ubinary"] | None = None
    encoding_format: Literal["base64"] | None = None


_decode = msgspec.json.Decoder(EmbedRequest).decode


async def embeddings(request: web.Request) -> web.StreamResponse:
    admitted = await common.admit(request, error, common.bearer)
    if isinstance(admitted, web.Response):
        return admitted
    raw, b = admitted
    try:
        req = _decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return error(400, f"Request body is invalid: {exc}")
    texts = [req.input] if isinstance(req.input, str) else req.input
    if not texts or any(not t for t in texts):
        return error(400, "input must be a non-empty string or list of non-empty strings")
    b, failed = await common.act(b, texts, error)
    if failed is not None:
        return failed
    dims = req.output_dimension or request.app[SIM_STATE].settings.embedding_dimensions
    data = []
    for i, t in enumerate(texts):
        vec = text.embedding(req.model, t, dims)
        value: list[float] | str = vec
        if req.encoding_format == "base64":
            value = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
        data.append({"object": "embedding", "embedding": value, "index": i})
    tokens = sum(text.count_text_tokens(t) for t in texts)
    body = {"object": "list", "data": data, "model": req.model, "usage": {"total_tokens": tokens}}
    return web.Response(body=_encoder.encode(body), content_type="application/json")


def register(app: web.Application) -> None:
    app.router.add_post("/voyage/v1/embeddings", embeddings)
