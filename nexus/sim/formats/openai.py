"""The OpenAI wire format: chat completions (unary and SSE, with a usage
chunk when ``stream_options.include_usage``), embeddings and the model list."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import time
from typing import Any

import msgspec
from aiohttp import web

# Requests are validated with the canonical types; responses are written as
# plain dicts so the sim stays an independent rendering of the wire format
# (a bug in our canonical types must not be mirrored by the fake upstream).
from adapters.canonical import ChatRequest
from nexus.sim import text
from nexus.sim.behaviour import BadSimHeader, Behaviour, resolve
from nexus.sim.state import SIM_STATE, SimState

_encoder = msgspec.json.Encoder()
_chat_decoder = msgspec.json.Decoder(ChatRequest)


class _EmbeddingRequestWire(msgspec.Struct):
    # adapters.canonical.EmbeddingRequest's ``input`` union (several array
    # types) cannot be decoded by msgspec, so the wire shape is declared here.
    model: str
    input: str | list[str | int | list[int]]
    encoding_format: str | None = None
    dimensions: int | None = None
    user: str | None = None


_embed_decoder = msgspec.json.Decoder(_EmbeddingRequestWire)
_any_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder()

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout",
    429: "rate_limit_exceeded",
}


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {
        "error": {
            "message": message,
            "type": _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error"),
            "param": param,
            "code": code,
        }
    }
    return web.Response(
        status=status, body=_encoder.encode(body), content_type="application/json", headers=headers
    )


def _param_of(exc: msgspec.ValidationError) -> str | None:
    # msgspec: "Expected `array`, got `str` - at `$.messages`" or
    # "Object missing required field `model`"
    msg = str(exc)
    if "- at `$." in msg:
        return msg.rsplit("- at `$.", 1)[1].rstrip("`").split("[")[0].split(".")[0]
    if msg.startswith("Object missing required field `"):
        return msg.split("`")[1]
    return None


async def _sleep_ms(ms: float) -> None:
    if ms > 0:
        await asyncio.sleep(ms / 1000)


def _completion_id(model: str, prompt: str) -> str:
    return "chatcmpl-sim" + hashlib.sha256(f"{model}\x00{prompt}".encode()).hexdigest()[:20]


def _usage(prompt_tokens: int, completion_tokens: int, b: Behaviour) -> dict[str, Any]:
    completion = completion_tokens + b.reasoning_tokens
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": min(b.cached_tokens, prompt_tokens), "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": b.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


async def _admit(request: web.Request, state: SimState) -> tuple[Any, Behaviour] | web.Response:
    """Authentication, recording and failure injection shared by every route."""
    raw = await request.read()
    try:
        parsed: Any = _any_decoder.decode(raw) if raw else None
    except msgspec.DecodeError:
        parsed = raw.decode("utf-8", "replace")
    state.recorder.record(request.method, request.path, parsed, dict(request.headers.items()))
    headers = {k.lower(): v for k, v in request.headers.items()}
    if state.settings.api_key is not None:
        auth = headers.get("authorization", "")
        if auth != f"Bearer {state.settings.api_key}":
            return error_response(401, "Incorrect API key provided.", code="invalid_api_key")
    try:
        behaviour = resolve(state.settings, headers, state.next_request_number())
    except BadSimHeader as exc:
        return error_response(400, str(exc), code="invalid_sim_header")
    await _sleep_ms(behaviour.delay_ms)
    if behaviour.hang:
        await asyncio.sleep(3600)
    if behaviour.fail_status:
        extra = {"Retry-After": behaviour.retry_after} if behaviour.fail_status in (429, 503) else None
        return error_response(
            behaviour.fail_status,
            f"Simulated failure ({behaviour.fail_status}).",
            code="sim_injected_failure",
            headers=extra,
        )
    if not isinstance(parsed, dict):
        return error_response(400, "We could not parse the JSON body of your request.", code="invalid_json")
    return raw, behaviour


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[SIM_STATE]
    admitted = await _admit(request, state)
    if isinstance(admitted, web.Response):
        return admitted
    raw, b = admitted
    try:
        req = _chat_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        return error_response(400, f"Invalid request: {exc}", code="invalid_request", param=_param_of(exc))
    if not req.model:
        return error_response(400, "you must provide a model parameter", param="model")
    if not req.messages:
        return error_response(400, "messages must not be empty", param="messages")
    n = req.n or 1
    if not 1 <= n <= 8:
        return error_response(400, "n must be between 1 and 8", param="n")
    budget = req.output_budget()
    if budget is not None and budget < 1:
        return error_response(400, "max_tokens must be at least 1", param="max_tokens")

    texts = [m.text() for m in req.messages]
    prompt = "\n".join(texts)
    prompt_tokens = text.count_prompt_tokens(texts)
    choices_words: list[tuple[list[str], str]] = []
    for i in range(n):
        words = text.completion_words(req.model, prompt, choice=i)
        finish = "stop"
        if budget is not None and len(words) > budget:
            words, finish = words[:budget], "length"
        choices_words.append((words, finish))
    completion_tokens = sum(len(w) for w, _ in choices_words)
    usage = None if b.omit_usage else _usage(prompt_tokens, completion_tokens, b)
    cid = _completion_id(req.model, prompt)
    created = int(time.time())

    if not req.stream:
        await _sleep_ms(b.ttft_ms)
        if b.tokens_per_s > 0:
            await asyncio.sleep(completion_tokens / b.tokens_per_s)
        resp = {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": req.model,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text.completion_text(w), "refusal": None},
                    "logprobs": None,
                    "finish_reason": f,
                }
                for i, (w, f) in enumerate(choices_words)
            ],
            "usage": usage,
            "system_fingerprint": "fp_nexus_sim",
        }
        if usage is None:
            del resp["usage"]
        return web.Response(body=_encoder.encode(resp), content_type="application/json")

    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    return await _stream(request, cid, req.model, created, choices_words, usage if include_usage else None, b)


def _frame(obj: Any) -> bytes:
    return b"data: " + _encoder.encode(obj) + b"\n\n"


async def _stream(
    request: web.Request,
    cid: str,
    model: str,
    created: int,
    choices_words: list[tuple[list[str], str]],
    usage: dict[str, Any] | None,
    b: Behaviour,
) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)

    def chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_nexus_sim",
            "choices": choices,
        }
        if usage is not None:
            body["usage"] = usage
        return _frame(body)

    def choice(i: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}

    await resp.write(
        chunk([choice(i, {"role": "assistant", "content": ""}) for i in range(len(choices_words))])
    )
    await _sleep_ms(b.ttft_ms)
    gap = 1 / b.tokens_per_s if b.tokens_per_s > 0 else 0.0
    sent = 0
    for i, (words, _) in enumerate(choices_words):
        for j, word in enumerate(words):
            if sent == b.error_after:
                # What OpenAI sends when generation fails after the headers went out.
                error = {
                    "message": "The server had an error while processing your request.",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
                await resp.write(_frame({"error": error}))
                await resp.write_eof()
                return resp
            if sent == b.drop_after:
                # A provider dying mid-stream: abort the connection without
                # finishing the chunked body, exactly what a crash looks like.
                assert request.transport is not None
                request.transport.abort()
                return resp
            if gap and sent:
                await asyncio.sleep(gap)
            piece = word if j == 0 else " " + word
            await resp.write(chunk([choice(i, {"content": piece})]))
            sent += 1
    await resp.write(chunk([choice(i, {}, f) for i, (_, f) in enumerate(choices_words)]))
    if usage is not None:
        await resp.write(chunk([], usage))
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def embeddings(request: web.Request) -> web.StreamResponse:
    state = request.app[SIM_STATE]
    admitted = await _admit(request, state)
    if isinstance(admitted, web.Response):
        return admitted
    raw, b = admitted
    try:
        req = _embed_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        return error_response(400, f"Invalid request: {exc}", code="invalid_request", param=_param_of(exc))
    if not req.model:
        return error_response(400, "you must provide a model parameter", param="model")
    inputs: list[str]
    if isinstance(req.input, str):
        inputs = [req.input]
    elif all(isinstance(x, str) for x in req.input):
        inputs = [str(x) for x in req.input]
    else:  # token arrays: embed their textual form
        inputs = [str(x) for x in req.input]
    if not inputs or any(s == "" for s in inputs):
        return error_response(400, "input must be a non-empty string or array", param="input")
    dims = req.dimensions or state.settings.embedding_dimensions
    if not 1 <= dims <= 4096:
        return error_response(400, "dimensions must be between 1 and 4096", param="dimensions")
    await _sleep_ms(b.ttft_ms)
    data: list[dict[str, Any]] = []
    for i, s in enumerate(inputs):
        vec = text.embedding(req.model, s, dims)
        value: list[float] | str = vec
        if req.encoding_format == "base64":
            value = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
        data.append({"object": "embedding", "index": i, "embedding": value})
    tokens = sum(text.count_text_tokens(s) for s in inputs)
    resp = {
        "object": "list",
        "data": data,
        "model": req.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return web.Response(body=_encoder.encode(resp), content_type="application/json")


async def models(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    body = {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "nexus-sim"} for m in state.settings.models
        ],
    }
    return web.Response(body=_encoder.encode(body), content_type="application/json")


def register(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", models)
