"""Replicate's predictions API under /replicate, per
https://replicate.com/docs/reference/http: POST
/v1/models/{owner}/{name}/predictions (or /v1/predictions with a version)
with ``Prefer: wait`` answers the finished prediction (output as a list
of string pieces, token counts in metrics); with ``stream: true`` it answers
a starting prediction whose ``urls.stream`` serves SSE ``output`` events, then
``done`` (or ``error``).  Errors are problem+json ``{title, detail, status}``."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
from aiohttp import web

from nexus.sim import core
from nexus.sim.behaviour import Behaviour
from nexus.sim.formats import common

_encoder = msgspec.json.Encoder()
_PENDING = web.AppKey("replicate_pending", dict)


def error(status: int, message: str) -> web.Response:
    body = {"title": "Request failed", "detail": message, "status": status}
    return web.Response(status=status, body=_encoder.encode(body), content_type="application/problem+json")


class PredictionRequest(msgspec.Struct, forbid_unknown_fields=True):
    input: dict[str, Any]
    version: str | None = None
    stream: bool | None = None
    webhook: str | None = None
    webhook_events_filter: list[str] | None = None


_decode = msgspec.json.Decoder(PredictionRequest).decode


def _token(headers: dict[str, str]) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() in ("token", "bearer") else None


def _ask(req: PredictionRequest, model: str) -> core.Ask:
    prompt = req.input.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise common.Rejected(422, "input.prompt is required")
    system = req.input.get("system_prompt")
    texts = ([system] if isinstance(system, str) else []) + [prompt]
    budget = req.input.get("max_tokens", req.input.get("max_new_tokens"))
    return core.Ask(model=model, texts=texts, max_tokens=budget if isinstance(budget, int) else None)


def _prediction(pid: str, model: str, req: PredictionRequest, status: str) -> dict[str, Any]:
    return {
        "id": pid,
        "model": model,
        "version": req.version or "sim-version",
        "input": req.input,
        "logs": "",
        "output": None,
        "error": None,
        "status": status,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "urls": {},
    }


async def _create(request: web.Request, model: str) -> web.StreamResponse:
    admitted = await common.admit(request, error, _token)
    if isinstance(admitted, web.Response):
        return admitted
    raw, b = admitted
    try:
        req = _decode(raw)
        ask = _ask(req, model)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return error(422, f"invalid prediction: {exc}")
    except common.Rejected as exc:
        return error(exc.status, exc.message)
    b, failed = await common.act(b, ask.texts, error)
    if failed is not None:
        return failed
    a = core.answer(ask, b)
    pid = "sim" + a.id[:16]
    base = f"{request.scheme}://{request.host}/replicate/v1/predictions/{pid}"
    if req.stream:
        request.app[_PENDING][pid] = (a, b)
        pred = _prediction(pid, model, req, "starting")
        pred["urls"] = {"get": base, "cancel": base + "/cancel", "stream": base + "/stream"}
        return web.Response(status=201, body=_encoder.encode(pred), content_type="application/json")
    if request.headers.get("Prefer", "").startswith("wait"):
        pred = _prediction(pid, model, req, "succeeded")
        pred["output"] = a.pieces
        pred["metrics"] = {
            "input_token_count": a.prompt_tokens,
            "output_token_count": a.completion_tokens,
            "predict_time": 0.01,
        }
        pred["urls"] = {"get": base, "cancel": base + "/cancel"}
        return web.Response(status=201, body=_encoder.encode(pred), content_type="application/json")
    return error(422, "this sim answers with Prefer: wait or stream: true only")


async def models_predictions(request: web.Request) -> web.StreamResponse:
    return await _create(request, f"{request.match_info['owner']}/{request.match_info['name']}")


async def predictions(request: web.Request) -> web.StreamResponse:
    return await _create(request, "sim/versioned")


async def stream(request: web.Request) -> web.StreamResponse:
    headers = {k.lower(): v for k, v in request.headers.items()}
    if _token(headers) is None:
        return error(401, "You did not pass an authentication token")
    pending: dict[str, tuple[core.Answer, Behaviour]] = request.app[_PENDING]
    entry = pending.pop(request.match_info["pid"], None)
    if entry is None:
        return error(404, "prediction not found (or already streamed)")
    a, b = entry
    out = await common.start_stream(request)

    async def fail() -> None:
        await out.write(b'event: error\ndata: {"detail": "prediction failed"}\n\n')

    def piece(_: int, p: str) -> bytes:
        lines = p.split("\n")
        return b"event: output\n" + b"".join(b"data: " + line.encode() + b"\n" for line in lines) + b"\n"

    if not await common.pieces(request, out, b, a.pieces, piece, fail, [0]):
        return out
    await out.write(b"event: done\ndata: {}\n\n")
    await out.write_eof()
    return out


def register(app: web.Application) -> None:
    app[_PENDING] = {}
    app.router.add_post("/replicate/v1/models/{owner}/{name}/predictions", models_predictions)
    app.router.add_post("/replicate/v1/predictions", predictions)
    app.router.add_get("/replicate/v1/predictions/{pid}/stream", stream)
