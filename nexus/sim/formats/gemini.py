"""Google's Gemini API (https://ai.google.dev/api/generate-content,
/api/embeddings) under /gemini, and the same models on Vertex AI
(https://cloud.google.com/vertex-ai/generative-ai/docs/reference/rest)
under /vertex: generateContent, streamGenerateContent?alt=sse,
embedContent, batchEmbedContents (Gemini) and predict (Vertex embeddings).

Requests are checked as the API does: unknown fields are rejected ("Invalid
JSON payload received. Unknown name ..."), roles are user/model, a part
holds one kind of data, function responses answer declared functions, and
inline images carry a mimeType and base64 data.  Errors are
``{"error":{code,message,status}}``."""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any, Literal

import msgspec
from aiohttp import web

from nexus.sim import core, text
from nexus.sim.formats import anthropic, common
from nexus.sim.state import SIM_STATE

_encoder = msgspec.json.Encoder()

_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def error(status: int, message: str) -> web.Response:
    body = {"error": {"code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN")}}
    return web.Response(status=status, body=_encoder.encode(body), content_type="application/json")


class _Strict(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    pass


class Blob(_Strict):
    mime_type: str
    data: str


class FileData(_Strict):
    file_uri: str
    mime_type: str | None = None


class FunctionCall(_Strict):
    name: str
    args: dict[str, Any] | None = None
    id: str | None = None


class FunctionResponse(_Strict):
    name: str
    response: dict[str, Any]
    id: str | None = None


class Part(_Strict):
    text: str | None = None
    thought: bool | None = None
    thought_signature: str | None = None
    inline_data: Blob | None = None
    file_data: FileData | None = None
    function_call: FunctionCall | None = None
    function_response: FunctionResponse | None = None


class Content(_Strict):
    parts: list[Part]
    role: Literal["user", "model"] | None = None


class FunctionDeclaration(_Strict):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    parameters_json_schema: dict[str, Any] | None = None


class Tool(_Strict):
    function_declarations: list[FunctionDeclaration] | None = None
    google_search: dict[str, Any] | None = None
    code_execution: dict[str, Any] | None = None


class FunctionCallingConfig(_Strict):
    mode: Literal["AUTO", "ANY", "NONE", "VALIDATED", "MODE_UNSPECIFIED"] | None = None
    allowed_function_names: list[str] | None = None


class ToolConfig(_Strict):
    function_calling_config: FunctionCallingConfig | None = None


class ThinkingConfig(_Strict):
    thinking_budget: int | None = None
    include_thoughts: bool | None = None
    thinking_level: str | None = None


class GenerationConfig(_Strict):
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_output_tokens: int | None = None
    stop_sequences: list[str] | None = None
    candidate_count: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    response_mime_type: str | None = None
    response_schema: dict[str, Any] | None = None
    response_json_schema: dict[str, Any] | None = None
    response_logprobs: bool | None = None
    logprobs: int | None = None
    thinking_config: ThinkingConfig | None = None


class GenerateContentRequest(_Strict):
    contents: list[Content]
    system_instruction: Content | None = None
    tools: list[Tool] | None = None
    tool_config: ToolConfig | None = None
    generation_config: GenerationConfig | None = None
    safety_settings: list[dict[str, Any]] | None = None
    cached_content: str | None = None
    labels: dict[str, str] | None = None


class CountTokensRequest(_Strict):
    contents: list[Content] | None = None
    generate_content_request: GenerateContentRequest | None = None


class EmbedContentRequest(_Strict):
    content: Content
    model: str | None = None
    task_type: str | None = None
    title: str | None = None
    output_dimensionality: int | None = None


class BatchEmbedContentsRequest(_Strict):
    requests: list[EmbedContentRequest]


class _VertexInstance(msgspec.Struct, forbid_unknown_fields=True):
    content: str
    task_type: str | None = None
    title: str | None = None


class _VertexParameters(msgspec.Struct, forbid_unknown_fields=True):
    outputDimensionality: int | None = None
    autoTruncate: bool | None = None


class PredictRequest(msgspec.Struct, forbid_unknown_fields=True):
    instances: list[_VertexInstance]
    parameters: _VertexParameters | None = None


_generate = msgspec.json.Decoder(GenerateContentRequest).decode
_embed = msgspec.json.Decoder(EmbedContentRequest).decode
_count = msgspec.json.Decoder(CountTokensRequest).decode
_batch = msgspec.json.Decoder(BatchEmbedContentsRequest).decode
_predict = msgspec.json.Decoder(PredictRequest).decode


def _check_part(p: Part, role: str | None) -> None:
    kinds = [
        k
        for k in ("text", "inline_data", "file_data", "function_call", "function_response")
        if getattr(p, k) is not None
    ]
    if len(kinds) != 1:
        raise common.Rejected(400, f"a Part must hold exactly one kind of data, got {kinds or 'none'}")
    if p.inline_data is not None:
        try:
            base64.b64decode(p.inline_data.data, validate=True)
        except (binascii.Error, ValueError):
            raise common.Rejected(400, "inlineData.data is not valid base64") from None
    if p.function_call is not None and role != "model":
        raise common.Rejected(400, "functionCall parts belong to model turns")


def _ask(req: GenerateContentRequest, model: str, vertex: bool) -> core.Ask:
    texts: list[str] = []
    if req.system_instruction is not None:
        texts.append("".join(p.text or "" for p in req.system_instruction.parts))
    declared = {
        d.name: (d.parameters_json_schema or d.parameters or {})
        for t in req.tools or ()
        for d in t.function_declarations or ()
    }
    images = 0
    after_result = False
    if not req.contents:
        raise common.Rejected(400, "contents is not specified")
    for c in req.contents:
        if vertex and c.role is None:
            raise common.Rejected(400, "Please use a valid role: user, model.")
        after_result = False
        parts_text = []
        for p in c.parts:
            _check_part(p, c.role)
            if p.text is not None and not p.thought:
                parts_text.append(p.text)
            if p.inline_data is not None or p.file_data is not None:
                images += 1
            if p.function_response is not None:
                if p.function_response.name not in declared:
                    raise common.Rejected(
                        400, f"functionResponse names an undeclared function {p.function_response.name!r}"
                    )
                after_result = True
        texts.append("".join(parts_text))
    gc = req.generation_config or GenerationConfig()
    mode = (
        req.tool_config.function_calling_config.mode
        if req.tool_config and req.tool_config.function_calling_config
        else None
    ) or "AUTO"
    allowed = (
        req.tool_config.function_calling_config.allowed_function_names
        if req.tool_config and req.tool_config.function_calling_config
        else None
    ) or []
    choice = {"NONE": "none", "ANY": allowed[0] if len(allowed) == 1 else "required"}.get(mode, "auto")
    schema = gc.response_json_schema or gc.response_schema
    if schema is not None and gc.response_mime_type != "application/json":
        raise common.Rejected(400, "responseSchema requires responseMimeType application/json")
    thinking = gc.thinking_config is not None and bool(gc.thinking_config.include_thoughts)
    return core.Ask(
        model=model,
        texts=texts,
        tools=list(declared.items()),
        tool_choice=choice,
        after_tool_result=after_result,
        images=images,
        json_schema=schema,
        json_mode=gc.response_mime_type == "application/json" and schema is None,
        reasoning=thinking,
        max_tokens=gc.max_output_tokens,
    )


_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"}


def _usage(a: core.Answer) -> dict[str, Any]:
    # candidatesTokenCount excludes thoughts; totalTokenCount includes them.
    usage = {
        "promptTokenCount": a.prompt_tokens,
        "candidatesTokenCount": a.completion_tokens - a.reasoning_tokens,
        "totalTokenCount": a.total_tokens,
    }
    if a.cached_tokens:
        usage["cachedContentTokenCount"] = a.cached_tokens
    if a.reasoning_tokens:
        usage["thoughtsTokenCount"] = a.reasoning_tokens
    return usage


def _response(
    a: core.Answer, model: str, parts: list[dict[str, Any]], finish: str | None, usage: bool
) -> bytes:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    body: dict[str, Any] = {"candidates": [candidate], "modelVersion": model, "responseId": a.id}
    if usage:
        body["usageMetadata"] = _usage(a)
    return _encoder.encode(body)


def _all_parts(a: core.Answer) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if a.reasoning:
        parts.append({"text": a.reasoning_text, "thought": True})
    if a.pieces:
        parts.append({"text": a.text})
    for i, c in enumerate(a.calls):
        part: dict[str, Any] = {"functionCall": {"name": c.name, "args": c.arguments}}
        if i == 0:
            part["thoughtSignature"] = base64.b64encode(b"sig-" + a.id.encode()).decode()
        parts.append(part)
    return parts


async def _generate_handler(
    request: web.Request, model: str, stream: bool, vertex: bool
) -> web.StreamResponse:
    credential = common.bearer if vertex else common.header("x-goog-api-key")
    admitted = await common.admit(request, error, credential)
    if isinstance(admitted, web.Response):
        return admitted
    raw, b = admitted
    if stream and request.query.get("alt") != "sse":
        return error(400, "this sim serves streamGenerateContent as SSE only (alt=sse)")
    try:
        ask = _ask(_generate(raw), model, vertex)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return error(400, f"Invalid JSON payload received. {exc}")
    except common.Rejected as exc:
        return error(exc.status, exc.message)
    b, failed = await common.act(b, ask.texts, error)
    if failed is not None:
        return failed
    a = core.answer(ask, b)
    finish = _FINISH[a.finish]
    if not stream:
        await common.sleep_ms(b.ttft_ms)
        return web.Response(
            body=_response(a, model, _all_parts(a), finish, True), content_type="application/json"
        )

    out = await common.start_stream(request)

    def frame(payload: bytes) -> bytes:
        return b"data: " + payload + b"\r\n\r\n"

    async def fail() -> None:
        await out.write(
            frame(
                _encoder.encode(
                    {"error": {"code": 500, "message": "Internal error encountered.", "status": "INTERNAL"}}
                )
            )
        )

    await common.sleep_ms(b.ttft_ms)
    sent = [0]
    if a.reasoning and not await common.pieces(
        request,
        out,
        b,
        a.reasoning,
        lambda i, p: frame(_response(a, model, [{"text": p, "thought": True}], None, False)),
        fail,
        sent,
    ):
        return out
    if a.pieces and not await common.pieces(
        request,
        out,
        b,
        a.pieces,
        lambda i, p: frame(_response(a, model, [{"text": p}], None, False)),
        fail,
        sent,
    ):
        return out
    calls = [p for p in _all_parts(a) if "functionCall" in p]
    await out.write(frame(_response(a, model, calls, finish, True)))
    await out.write_eof()
    return out


def _vector(model: str, text_: str, dims: int | None, settings_dims: int) -> list[float]:
    return text.embedding(model, text_, dims or settings_dims)


def _text_of(content: Content) -> str:
    if any(p.text is None for p in content.parts):
        raise common.Rejected(400, "embedding content must be text parts")
    return "".join(p.text or "" for p in content.parts)


async def _embed_handler(request: web.Request, model: str, batch: bool) -> web.StreamResponse:
    admitted = await common.admit(request, error, common.header("x-goog-api-key"))
    if isinstance(admitted, web.Response):
        return admitted
    raw, b = admitted
    dims = request.app[SIM_STATE].settings.embedding_dimensions
    try:
        if batch:
            reqs = _batch(raw).requests
            for r in reqs:
                if r.model != f"models/{model}":
                    raise common.Rejected(400, f"requests[].model must be models/{model}, got {r.model!r}")
        else:
            reqs = [_embed(raw)]
        texts = [_text_of(r.content) for r in reqs]
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return error(400, f"Invalid JSON payload received. {exc}")
    except common.Rejected as exc:
        return error(exc.status, exc.message)
    b, failed = await common.act(b, texts, error)
    if failed is not None:
        return failed
    vectors = [
        {"values": _vector(model, t, r.output_dimensionality, dims)} for t, r in zip(texts, reqs, strict=True)
    ]
    body = {"embeddings": vectors} if batch else {"embedding": vectors[0]}
    return web.Response(body=_encoder.encode(body), content_type="application/json")


async def _count_handler(request: web.Request, model: str) -> web.StreamResponse:
    admitted = await common.admit(request, error, common.header("x-goog-api-key"))
    if isinstance(admitted, web.Response):
        return admitted
    raw, _b = admitted
    try:
        req = _count(raw)
        inner = req.generate_content_request or GenerateContentRequest(contents=req.contents or [])
        ask = _ask(inner, model, False)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return error(400, f"Invalid JSON payload received. {exc}")
    except common.Rejected as exc:
        return error(exc.status, exc.message)
    body = {"totalTokens": text.count_prompt_tokens(ask.texts)}
    return web.Response(body=_encoder.encode(body), content_type="application/json")


def _split(action: str) -> tuple[str, str]:
    model, _, verb = action.partition(":")
    return model, verb


async def gemini_model_action(request: web.Request) -> web.StreamResponse:
    model, verb = _split(request.match_info["action"])
    if verb == "generateContent":
        return await _generate_handler(request, model, False, False)
    if verb == "streamGenerateContent":
        return await _generate_handler(request, model, True, False)
    if verb == "countTokens":
        return await _count_handler(request, model)
    if verb == "embedContent":
        return await _embed_handler(request, model, False)
    if verb == "batchEmbedContents":
        return await _embed_handler(request, model, True)
    return error(404, f"unknown method {verb!r}")


async def vertex_model_action(request: web.Request) -> web.StreamResponse:
    model, verb = _split(request.match_info["action"])
    publisher = request.match_info["publisher"]
    if publisher == "anthropic" and verb in ("rawPredict", "streamRawPredict"):
        return await anthropic.vertex_raw_predict(request, model, verb == "streamRawPredict")
    if publisher != "google":
        return error(404, "this sim serves publishers/google and publishers/anthropic models only")
    if verb == "generateContent":
        return await _generate_handler(request, model, False, True)
    if verb == "streamGenerateContent":
        return await _generate_handler(request, model, True, True)
    if verb == "predict":
        return await _predict_handler(request, model)
    if verb in ("embedContent", "batchEmbedContents"):
        return await _vertex_embed_handler(request, model, verb == "batchEmbedContents")
    return error(404, f"unknown method {verb!r}")


class _VertexEmbedConfig(_Strict):
    task_type: str | None = None
    title: str | None = None
    output_dimensionality: int | None = None
    auto_truncate: bool | None = None


class _VertexEmbed(_Strict):
    content: Content
    embed_content_config: _VertexEmbedConfig | None = None


class _VertexBatch(_Strict):
    requests: list[_VertexEmbed]


async def _vertex_embed_handler(request: web.Request, model: str, batch: bool) -> web.StreamResponse:
    """Vertex's embedContent / batchEmbedContents (Gemini embedding models):
    the config in ``embedContentConfig``, the prompt tokens in ``usageMetadata``."""
    admitted = await common.admit(request, error, common.bearer)
    if isinstance(admitted, web.Response):
        return admitted
    raw, b = admitted
    dims = request.app[SIM_STATE].settings.embedding_dimensions
    try:
        reqs = (
            msgspec.json.decode(raw, type=_VertexBatch).requests
            if batch
            else [msgspec.json.decode(raw, type=_VertexEmbed)]
        )
        texts = [_text_of(r.content) for r in reqs]
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return error(400, f"Invalid JSON payload received. {exc}")
    except common.Rejected as exc:
        return error(exc.status, exc.message)
    b, failed = await common.act(b, texts, error)
    if failed is not None:
        return failed
    vectors = [
        {
            "values": _vector(
                model, t, (r.embed_content_config or _VertexEmbedConfig()).output_dimensionality, dims
            )
        }
        for t, r in zip(texts, reqs, strict=True)
    ]
    tokens = sum(text.count_text_tokens(t) for t in texts)
    usage = {"promptTokenCount": tokens, "totalTokenCount": tokens}
    body = {"embeddings": vectors} if batch else {"embedding": vectors[0], "truncated": False}
    return web.Response(
        body=_encoder.encode({**body, "usageMetadata": usage}), content_type="application/json"
    )


async def _predict_handler(request: web.Request, model: str) -> web.StreamResponse:
    admitted = await common.admit(request, error, common.bearer)
    if isinstance(admitted, web.Response):
        return admitted
    raw, b = admitted
    dims = request.app[SIM_STATE].settings.embedding_dimensions
    try:
        req = _predict(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return error(400, f"Invalid JSON payload received. {exc}")
    texts = [i.content for i in req.instances]
    b, failed = await common.act(b, texts, error)
    if failed is not None:
        return failed
    out_dims = req.parameters.outputDimensionality if req.parameters else None
    predictions = [
        {
            "embeddings": {
                "values": _vector(model, t, out_dims, dims),
                "statistics": {"token_count": text.count_text_tokens(t), "truncated": False},
            }
        }
        for t in texts
    ]
    return web.Response(body=_encoder.encode({"predictions": predictions}), content_type="application/json")


class CachedContent(_Strict):
    """A cached content as Google takes it on create (and on an update:
    Google changes only the expiry)."""

    model: str | None = None
    contents: list[Content] | None = None
    system_instruction: Content | None = None
    tools: list[Tool] | None = None
    tool_config: ToolConfig | None = None
    display_name: str | None = None
    ttl: str | None = None
    expire_time: str | None = None
    name: str | None = None


_cached = msgspec.json.Decoder(CachedContent).decode


async def cached_contents(request: web.Request) -> web.StreamResponse:
    """POST .../cachedContents (create) and PATCH .../cachedContents/{id}
    (update), on the Gemini API (key) and on Vertex AI (bearer token)."""
    vertex = "project" in request.match_info
    credential = common.bearer if vertex else common.header("x-goog-api-key")
    admitted = await common.admit(request, error, credential)
    if isinstance(admitted, web.Response):
        return admitted
    raw, _b = admitted
    try:
        cache = _cached(raw)
        texts = []
        if cache.system_instruction is not None:
            texts.append("".join(p.text or "" for p in cache.system_instruction.parts))
        for c in cache.contents or ():
            for p in c.parts:
                _check_part(p, c.role)
            texts.append("".join(p.text or "" for p in c.parts))
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return error(400, f"Invalid JSON payload received. {exc}")
    except common.Rejected as exc:
        return error(exc.status, exc.message)
    cache_id = request.match_info.get("cache") or hashlib.sha256(raw).hexdigest()[:12]
    scope = (
        f"projects/{request.match_info['project']}/locations/{request.match_info['location']}/"
        if vertex
        else ""
    )
    body = {
        "name": f"{scope}cachedContents/{cache_id}",
        "model": cache.model or "",
        "displayName": cache.display_name or "",
        "createTime": "2026-01-01T00:00:00Z",
        "updateTime": "2026-01-01T00:00:00Z",
        "expireTime": cache.expire_time or "2026-01-01T01:00:00Z",
        "usageMetadata": {"totalTokenCount": text.count_prompt_tokens(texts)},
    }
    return web.Response(body=_encoder.encode(body), content_type="application/json")


def register(app: web.Application) -> None:
    app.router.add_post("/gemini/v1beta/models/{action}", gemini_model_action)
    # generativelanguage.googleapis.com's own path: the proxy tests reach the
    # sim as that host, with an unmodified SDK.
    app.router.add_post("/v1beta/models/{action}", gemini_model_action)
    app.router.add_post("/v1/models/{action}", gemini_model_action)
    app.router.add_post(
        "/vertex/v1/projects/{project}/locations/{location}/publishers/{publisher}/models/{action}",
        vertex_model_action,
    )
    # Tuned models, cached contents, and Vertex AI at its own paths (the
    # proxy tests reach the sim as {location}-aiplatform.googleapis.com).
    for version in ("v1", "v1beta"):
        app.router.add_post(f"/{version}/tunedModels/{{action}}", gemini_model_action)
        app.router.add_post(f"/{version}/cachedContents", cached_contents)
        app.router.add_patch(f"/{version}/cachedContents/{{cache}}", cached_contents)
    for version in ("v1", "v1beta1"):
        scope = f"/{version}/projects/{{project}}/locations/{{location}}"
        app.router.add_post(f"{scope}/publishers/{{publisher}}/models/{{action}}", vertex_model_action)
        app.router.add_post(f"{scope}/cachedContents", cached_contents)
        app.router.add_patch(f"{scope}/cachedContents/{{cache}}", cached_contents)
