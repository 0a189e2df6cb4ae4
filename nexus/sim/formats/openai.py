"""The OpenAI wire format: chat completions (unary and SSE, with a usage
chunk when ``stream_options.include_usage``), embeddings and the model list."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

# Requests are validated with the canonical types; responses are written as
# plain dicts so the sim stays an independent rendering of the wire format
# (a bug in our canonical types must not be mirrored by the fake upstream).
from adapters.canonical import ChatRequest, ImagePart
from nexus.sim import core, text
from nexus.sim.behaviour import BadSimHeader, Behaviour, resolve
from nexus.sim.formats import common, responses
from nexus.sim.recorder import presented_credential
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


class Flavour(msgspec.Struct, frozen=True, kw_only=True):
    """Which OpenAI-shaped provider a mount plays: how it authenticates,
    which fields it refuses, how it reports reasoning and cache hits."""

    name: str = "openai"
    auth_header: str = "authorization"  # azure: api-key
    needs_api_version: bool = False  # azure: ?api-version= is required
    forbidden: tuple[str, ...] = ()  # top-level fields this provider rejects
    reasoning_text: bool = False  # returns reasoning_content (DeepSeek style)
    usage_dialect: str = ""  # deepseek | moonshot cache-hit fields
    # Mistral sends usage on the last chunk (with finish_reason), unasked.
    usage_on_finish: bool = False


OPENAI = Flavour()


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


async def _admit(
    request: web.Request, state: SimState, flavour: Flavour = OPENAI
) -> tuple[Any, Behaviour] | web.Response:
    """Authentication, recording and failure injection shared by every route."""
    raw = await request.read()
    try:
        parsed: Any = _any_decoder.decode(raw) if raw else None
    except msgspec.DecodeError:
        parsed = raw.decode("utf-8", "replace")
    path = request.path if flavour is OPENAI else request.path_qs
    state.recorder.record(request.method, path, parsed, dict(request.headers.items()))
    headers = {k.lower(): v for k, v in request.headers.items()}
    if flavour.needs_api_version and not request.query.get("api-version"):
        return error_response(404, "Resource not found (api-version is required).", code="404")
    if state.settings.api_key is not None:
        if flavour.auth_header == "authorization":
            ok = headers.get("authorization", "") == f"Bearer {state.settings.api_key}"
        else:
            ok = headers.get(flavour.auth_header, "") == state.settings.api_key
        if not ok:
            return error_response(401, "Incorrect API key provided.", code="invalid_api_key")
    refused = state.settings.credential_status.get(presented_credential(headers))
    if refused:
        return error_response(
            refused,
            f"Simulated credential failure ({refused}).",
            code="sim_credential_failure",
            headers={"Retry-After": "1"} if refused == 429 else None,
        )
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


def _reasoning_requested(req: ChatRequest) -> bool:
    if req.reasoning_effort:
        return True
    ext = req.nexus_ext or {}
    return any(isinstance(v, dict) and "thinking" in v for v in ext.values())


def _ask(req: ChatRequest) -> core.Ask:
    images = 0
    for m in req.messages:
        if isinstance(m.content, list):
            images += sum(1 for p in m.content if isinstance(p, ImagePart))
    tool_choice = "auto"
    if isinstance(req.tool_choice, str):
        tool_choice = req.tool_choice
    elif req.tool_choice is not None:
        tool_choice = req.tool_choice.function.name
    rf = req.response_format
    schema = rf.json_schema.schema if rf is not None and rf.json_schema is not None else None
    return core.Ask(
        model=req.model,
        texts=[m.text() for m in req.messages],
        tools=[(t.function.name, t.function.parameters or {}) for t in req.tools or ()],
        tool_choice=tool_choice,
        after_tool_result=bool(req.messages) and req.messages[-1].role == "tool",
        images=images,
        json_schema=schema if rf is not None and rf.type == "json_schema" else None,
        json_mode=rf is not None and rf.type == "json_object",
        reasoning=_reasoning_requested(req),
        max_tokens=req.output_budget(),
        stream=bool(req.stream),
    )


def _core_usage(a: core.Answer, flavour: Flavour) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": a.prompt_tokens,
        "completion_tokens": a.completion_tokens,
        "total_tokens": a.total_tokens,
        "prompt_tokens_details": {"cached_tokens": a.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": a.reasoning_tokens, "audio_tokens": 0},
    }
    if flavour.usage_dialect == "deepseek":
        # https://api-docs.deepseek.com/api/create-chat-completion: cache hits
        # beside prompt_tokens, no prompt_tokens_details.
        del usage["prompt_tokens_details"]
        usage["prompt_cache_hit_tokens"] = a.cached_tokens
        usage["prompt_cache_miss_tokens"] = a.prompt_tokens - a.cached_tokens
    elif flavour.usage_dialect == "moonshot":
        del usage["prompt_tokens_details"]
        usage["cached_tokens"] = a.cached_tokens
    return usage


def chat_handler(flavour: Flavour) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await chat_completions(request, flavour)

    return handler


async def chat_completions(request: web.Request, flavour: Flavour = OPENAI) -> web.StreamResponse:
    state = request.app[SIM_STATE]
    admitted = await _admit(request, state, flavour)
    if isinstance(admitted, web.Response):
        return admitted
    raw, b = admitted
    try:
        req = _chat_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        return error_response(400, f"Invalid request: {exc}", code="invalid_request", param=_param_of(exc))
    body = _any_decoder.decode(raw)
    for name in flavour.forbidden:
        if name in body:
            return error_response(400, f"{flavour.name} does not accept {name}", param=name)
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
    if n == 1:
        b, failed = await common.act(
            b, texts, lambda st, msg: error_response(st, msg, code="sim_injected_failure"), settle=False
        )
        if failed is not None:
            return failed
        return await _core_chat(request, req, core.answer(_ask(req), b), b, flavour)
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


def _core_message(a: core.Answer, flavour: Flavour) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": a.text if not a.calls else None, "refusal": None}
    if a.reasoning and flavour.reasoning_text:
        msg["reasoning_content"] = a.reasoning_text
    if a.calls:
        msg["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}
            for c in a.calls
        ]
    return msg


async def _core_chat(
    request: web.Request, req: ChatRequest, a: core.Answer, b: Behaviour, flavour: Flavour
) -> web.StreamResponse:
    usage = None if b.omit_usage else _core_usage(a, flavour)
    cid = "chatcmpl-sim" + a.id[:20]
    created = int(time.time())
    if not req.stream:
        await _sleep_ms(b.ttft_ms)
        resp: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": req.model,
            "choices": [
                {
                    "index": 0,
                    "message": _core_message(a, flavour),
                    "logprobs": None,
                    "finish_reason": a.finish,
                }
            ],
            "system_fingerprint": "fp_nexus_sim",
        }
        if usage is not None:
            resp["usage"] = usage
        return web.Response(body=_encoder.encode(resp), content_type="application/json")

    include_usage = bool(req.stream_options and req.stream_options.include_usage) and usage is not None
    out = await common.start_stream(request)

    def chunk(delta: dict[str, Any], finish: str | None = None, usage: dict[str, Any] | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": req.model,
            "system_fingerprint": "fp_nexus_sim",
            "choices": []
            if usage is not None
            else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if usage is not None:
            body["usage"] = usage
        return _frame(body)

    async def fail() -> None:
        error = {
            "message": "The server had an error while processing your request.",
            "type": "server_error",
            "param": None,
            "code": None,
        }
        await out.write(_frame({"error": error}))

    await out.write(chunk({"role": "assistant", "content": ""}))
    await _sleep_ms(b.ttft_ms)
    sent = [0]
    if (
        a.reasoning
        and flavour.reasoning_text
        and not await common.pieces(
            request, out, b, a.reasoning, lambda i, p: chunk({"reasoning_content": p}), fail, sent
        )
    ):
        return out
    if not await common.pieces(request, out, b, a.pieces, lambda i, p: chunk({"content": p}), fail, sent):
        return out
    for i, call in enumerate(a.calls):
        args = call.arguments_json
        half = len(args) // 2
        start = {
            "index": i,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        await out.write(chunk({"tool_calls": [start]}))
        parts = [args[:half], args[half:]]

        def arg(j: int, piece: str, i: int = i) -> bytes:
            return chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})

        if not await common.pieces(request, out, b, parts, arg, fail, sent):
            return out
    if flavour.usage_on_finish and usage is not None:
        finish = chunk({}, a.finish)
        body = _any_decoder.decode(finish[6:])
        body["usage"] = usage
        await out.write(_frame(body))
    else:
        await out.write(chunk({}, a.finish))
    if include_usage and not flavour.usage_on_finish:
        await out.write(chunk({}, usage=usage))
    await out.write(b"data: [DONE]\n\n")
    await out.write_eof()
    return out


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


def embeddings_handler(flavour: Flavour) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await embeddings(request, flavour)

    return handler


async def embeddings(request: web.Request, flavour: Flavour = OPENAI) -> web.StreamResponse:
    state = request.app[SIM_STATE]
    admitted = await _admit(request, state, flavour)
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
    # As OpenAI's: the listing needs a valid credential too (the Hub's
    # credential probe relies on it); a hanging sim hangs here as well.
    state.recorder.record(request.method, request.path, None, dict(request.headers.items()))
    expected = state.settings.api_key
    if expected is not None and request.headers.get("Authorization", "") != f"Bearer {expected}":
        return error_response(401, "Incorrect API key provided.", code="invalid_api_key")
    if state.settings.hang:
        await asyncio.sleep(3600)
    body = {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "nexus-sim"} for m in state.settings.models
        ],
    }
    return web.Response(body=_encoder.encode(body), content_type="application/json")


# The OpenAI-compatible providers the sim plays, each under /<name>/v1 (so a
# provider's base_url is <sim>/<name>/v1), with the quirks their docs state.
COMPAT: dict[str, Flavour] = {
    f.name: f
    for f in (
        Flavour(
            name="deepseek",
            forbidden=("max_completion_tokens",),
            reasoning_text=True,
            usage_dialect="deepseek",
        ),
        Flavour(
            name="moonshot",
            forbidden=("max_completion_tokens",),
            reasoning_text=True,
            usage_dialect="moonshot",
        ),
        # Mistral answers 422 extra_forbidden for OpenAI-only fields.
        Flavour(name="mistral", forbidden=("max_completion_tokens", "stream_options"), usage_on_finish=True),
        Flavour(name="groq", forbidden=("max_completion_tokens",)),
        Flavour(name="fireworks", forbidden=("max_completion_tokens",)),
        Flavour(name="together", forbidden=("max_completion_tokens",)),
        Flavour(name="perplexity", forbidden=("max_completion_tokens",)),
        Flavour(name="xai", forbidden=("max_completion_tokens",), reasoning_text=True),
        Flavour(name="huggingface", forbidden=("max_completion_tokens",)),
        Flavour(name="minimax", forbidden=("max_completion_tokens",)),
        Flavour(name="glm", forbidden=("max_completion_tokens",), reasoning_text=True),
    )
}
AZURE = Flavour(name="azure", auth_header="api-key", needs_api_version=True)


def register(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/responses", responses.create)
    for flavour in COMPAT.values():
        app.router.add_post(f"/{flavour.name}/v1/chat/completions", chat_handler(flavour))
        app.router.add_post(f"/{flavour.name}/v1/embeddings", embeddings_handler(flavour))
    # https://learn.microsoft.com/azure/ai-foundry/openai/reference
    app.router.add_post("/azure/openai/deployments/{deployment}/chat/completions", chat_handler(AZURE))
    app.router.add_post("/azure/openai/deployments/{deployment}/embeddings", embeddings_handler(AZURE))
