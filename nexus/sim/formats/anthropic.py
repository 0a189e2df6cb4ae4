"""Anthropic's Messages API (POST /anthropic/v1/messages), per
https://docs.anthropic.com/en/api/messages and /en/api/messages-streaming:
x-api-key and anthropic-version required; unknown fields, a missing
max_tokens, tool_result blocks without a matching tool_use, thinking
budgets out of range and malformed image sources are 400s, as the real API
answers (consecutive same-role turns are accepted: the API merges them).
Streams are named SSE events (message_start, content_block_*,
message_delta, message_stop); errors are
``{"type":"error","error":{type,message}}``, mid-stream too."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from aiohttp import web

from nexus.sim import core, text
from nexus.sim.behaviour import Behaviour
from nexus.sim.formats import common
from nexus.sim.state import SIM_STATE

_encoder = msgspec.json.Encoder()

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def error(status: int, message: str) -> web.Response:
    kind = _TYPES.get(status, "api_error")
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_sim"}
    return web.Response(status=status, body=_encoder.encode(body), content_type="application/json")


class _Strict(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    pass


class CacheControl(_Strict):
    type: Literal["ephemeral"]
    ttl: str | None = None


class Base64Source(_Strict, tag="base64", tag_field="type"):
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp", "application/pdf"]
    data: str


class URLSource(_Strict, tag="url", tag_field="type"):
    url: str


class TextBlock(_Strict, tag="text", tag_field="type"):
    text: str
    cache_control: CacheControl | None = None
    citations: Any = None


class ImageBlock(_Strict, tag="image", tag_field="type"):
    source: Base64Source | URLSource
    cache_control: CacheControl | None = None


class DocumentBlock(_Strict, tag="document", tag_field="type"):
    source: Base64Source | URLSource
    title: str | None = None
    context: str | None = None
    cache_control: CacheControl | None = None


class ToolUseBlock(_Strict, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: dict[str, Any]
    cache_control: CacheControl | None = None


class ToolResultBlock(_Strict, tag="tool_result", tag_field="type"):
    tool_use_id: str
    content: str | list[TextBlock | ImageBlock] | None = None
    is_error: bool | None = None
    cache_control: CacheControl | None = None


class ThinkingBlock(_Strict, tag="thinking", tag_field="type"):
    thinking: str
    signature: str


class RedactedThinkingBlock(_Strict, tag="redacted_thinking", tag_field="type"):
    data: str


Block = (
    TextBlock
    | ImageBlock
    | DocumentBlock
    | ToolUseBlock
    | ToolResultBlock
    | ThinkingBlock
    | RedactedThinkingBlock
)


class MessageParam(_Strict):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class ToolParam(_Strict):
    name: str
    input_schema: dict[str, Any]
    description: str | None = None
    type: str | None = None
    cache_control: CacheControl | None = None


class ToolChoice(_Strict):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(_Strict):
    type: Literal["enabled", "disabled"]
    budget_tokens: int | None = None


class Metadata(_Strict):
    user_id: str | None = None


class Request(_Strict):
    model: str
    max_tokens: int
    messages: list[MessageParam]
    system: str | list[TextBlock] | None = None
    stream: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: list[str] | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    metadata: Metadata | None = None
    service_tier: str | None = None


_decode = msgspec.json.Decoder(Request).decode


class CountRequest(_Strict):
    """POST /v1/messages/count_tokens: the prompt part of a Request (no
    max_tokens, sampling or stream: Anthropic refuses them there)."""

    model: str
    messages: list[MessageParam]
    system: str | list[TextBlock] | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None


_decode_count = msgspec.json.Decoder(CountRequest).decode


def _ask(req: Request) -> core.Ask:
    if not req.messages:
        raise common.Rejected(400, "messages: at least one message is required")
    if req.max_tokens < 1:
        raise common.Rejected(400, "max_tokens: must be at least 1")
    texts: list[str] = []
    if isinstance(req.system, str):
        texts.append(req.system)
    elif req.system:
        texts.append("\n\n".join(b.text for b in req.system))
    images = 0
    tool_ids: set[str] = set()
    last_is_result = False
    # Consecutive same-role turns are allowed (the API combines them), and
    # a final assistant turn is a prefill.
    for m in req.messages:
        blocks = [TextBlock(text=m.content)] if isinstance(m.content, str) else m.content
        parts: list[str] = []
        last_is_result = False
        for b in blocks:
            if isinstance(b, TextBlock):
                parts.append(b.text)
            elif isinstance(b, ImageBlock):
                images += 1
            elif isinstance(b, ToolUseBlock):
                if m.role != "assistant":
                    raise common.Rejected(400, "tool_use blocks may only appear in assistant messages")
                tool_ids.add(b.id)
            elif isinstance(b, ToolResultBlock):
                if b.tool_use_id not in tool_ids:
                    raise common.Rejected(400, f"tool_result block(s) without a tool_use: {b.tool_use_id}")
                last_is_result = True
                parts.append(b.content if isinstance(b.content, str) else "")
            elif isinstance(b, ThinkingBlock) and m.role != "assistant":
                raise common.Rejected(400, "thinking blocks may only appear in assistant messages")
        texts.append("".join(parts))
    thinking = req.thinking is not None and req.thinking.type == "enabled"
    if thinking:
        assert req.thinking is not None
        budget = req.thinking.budget_tokens or 0
        if budget < 1024 or budget >= req.max_tokens:
            raise common.Rejected(400, "thinking.budget_tokens must be >= 1024 and less than max_tokens")
    choice = "auto"
    if req.tool_choice is not None:
        if req.tool_choice.type == "tool":
            choice = req.tool_choice.name or ""
        elif req.tool_choice.type == "any":
            choice = "required"
        elif req.tool_choice.type == "none":
            choice = "none"
    tools = [(t.name, t.input_schema) for t in req.tools or () if t.type in (None, "custom")]
    return core.Ask(
        model=req.model,
        texts=texts,
        tools=tools,
        tool_choice=choice,
        after_tool_result=last_is_result,
        images=images,
        reasoning=thinking,
        max_tokens=req.max_tokens,
        stream=bool(req.stream),
    )


_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def _usage(a: core.Answer, output: int | None = None) -> dict[str, Any]:
    # input_tokens excludes cache reads (they are reported apart).
    return {
        "input_tokens": a.prompt_tokens - a.cached_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": a.cached_tokens,
        "output_tokens": a.completion_tokens if output is None else output,
    }


def _signature(a: core.Answer) -> str:
    return "sig_" + a.id


def _content(a: core.Answer) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if a.reasoning:
        out.append({"type": "thinking", "thinking": a.reasoning_text, "signature": _signature(a)})
    if a.pieces:
        out.append({"type": "text", "text": a.text})
    for c in a.calls:
        out.append({"type": "tool_use", "id": "toolu_" + c.id[5:], "name": c.name, "input": c.arguments})
    return out


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _encoder.encode({"type": name, **payload}) + b"\n\n"


async def messages(request: web.Request) -> web.StreamResponse:
    admitted = await common.admit(request, error, common.header("x-api-key"))
    if isinstance(admitted, web.Response):
        return admitted
    raw, b = admitted
    if not request.headers.get("anthropic-version"):
        return error(400, "anthropic-version: header is required")
    return await _serve(request, raw, b)


_any: msgspec.json.Decoder[Any] = msgspec.json.Decoder()
VERTEX_VERSION = "vertex-2023-10-16"


async def vertex_raw_predict(request: web.Request, model: str, stream: bool) -> web.StreamResponse:
    """Claude on Vertex AI (publishers/anthropic ... :rawPredict and
    :streamRawPredict): the Messages body with ``anthropic_version`` in it
    and the model in the URL, not the body; bearer (OAuth2) auth."""
    admitted = await common.admit(request, error, common.bearer)
    if isinstance(admitted, web.Response):
        return admitted
    raw, b = admitted
    try:
        body = _any.decode(raw)
    except msgspec.DecodeError as exc:
        return error(400, str(exc))
    if not isinstance(body, dict) or body.pop("anthropic_version", None) != VERTEX_VERSION:
        return error(400, f"anthropic_version must be {VERTEX_VERSION!r} in the body")
    if "model" in body:
        return error(400, "model: Extra inputs are not permitted (the model is in the URL)")
    if bool(body.get("stream")) != stream:
        return error(400, "stream must be true on streamRawPredict and absent on rawPredict")
    return await _serve(request, _encoder.encode({**body, "model": model}), b)


async def _serve(request: web.Request, raw: bytes, b: Behaviour) -> web.StreamResponse:
    try:
        req = _decode(raw)
        ask = _ask(req)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return error(400, str(exc))
    except common.Rejected as exc:
        return error(exc.status, exc.message)
    b, failed = await common.act(b, ask.texts, error)
    if failed is not None:
        return failed
    a = core.answer(ask, b)
    message = {
        "id": "msg_sim" + a.id,
        "type": "message",
        "role": "assistant",
        "model": req.model,
        "content": _content(a),
        "stop_reason": _STOP[a.finish],
        "stop_sequence": None,
        "usage": _usage(a),
    }
    if not req.stream:
        await common.sleep_ms(b.ttft_ms)
        return web.Response(body=_encoder.encode(message), content_type="application/json")

    out = await common.start_stream(request)

    async def fail() -> None:
        await out.write(_event("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}}))

    start = {**message, "content": [], "stop_reason": None, "usage": _usage(a, output=1)}
    await out.write(_event("message_start", {"message": start}))
    await out.write(_event("ping", {}))
    await common.sleep_ms(b.ttft_ms)
    sent = [0]
    index = 0

    def delta(kind: str, field: str) -> Any:
        def render(_: int, piece: str) -> bytes:
            return _event("content_block_delta", {"index": index, "delta": {"type": kind, field: piece}})

        return render

    if a.reasoning:
        await out.write(
            _event(
                "content_block_start",
                {"index": index, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
            )
        )
        if not await common.pieces(
            request, out, b, a.reasoning, delta("thinking_delta", "thinking"), fail, sent
        ):
            return out
        await out.write(
            _event(
                "content_block_delta",
                {"index": index, "delta": {"type": "signature_delta", "signature": _signature(a)}},
            )
        )
        await out.write(_event("content_block_stop", {"index": index}))
        index += 1
    if a.pieces:
        await out.write(
            _event("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}})
        )
        if not await common.pieces(request, out, b, a.pieces, delta("text_delta", "text"), fail, sent):
            return out
        await out.write(_event("content_block_stop", {"index": index}))
        index += 1
    for c in a.calls:
        block = {"type": "tool_use", "id": "toolu_" + c.id[5:], "name": c.name, "input": {}}
        await out.write(_event("content_block_start", {"index": index, "content_block": block}))
        args = c.arguments_json
        halves = [args[: len(args) // 2], args[len(args) // 2 :]]
        if not await common.pieces(
            request, out, b, halves, delta("input_json_delta", "partial_json"), fail, sent
        ):
            return out
        await out.write(_event("content_block_stop", {"index": index}))
        index += 1
    await out.write(
        _event(
            "message_delta",
            {
                "delta": {"stop_reason": _STOP[a.finish], "stop_sequence": None},
                "usage": {"output_tokens": a.completion_tokens},
            },
        )
    )
    await out.write(_event("message_stop", {}))
    await out.write_eof()
    return out


async def count_tokens(request: web.Request) -> web.Response:
    """The input tokens the same prompt would bill on /v1/messages."""
    admitted = await common.admit(request, error, common.header("x-api-key"))
    if isinstance(admitted, web.Response):
        return admitted
    raw, _b = admitted
    if not request.headers.get("anthropic-version"):
        return error(400, "anthropic-version: header is required")
    try:
        req = _decode_count(raw)
        fields = {f: getattr(req, f) for f in req.__struct_fields__}
        ask = _ask(Request(max_tokens=1, **fields))
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return error(400, str(exc))
    except common.Rejected as exc:
        return error(exc.status, exc.message)
    counted = {"input_tokens": text.count_prompt_tokens(ask.texts)}
    return web.Response(body=_encoder.encode(counted), content_type="application/json")


async def models(request: web.Request) -> web.Response:
    """GET /v1/models: the models the sim plays, as Anthropic lists them."""
    admitted = await common.admit(request, error, common.header("x-api-key"))
    if isinstance(admitted, web.Response):
        return admitted
    if not request.headers.get("anthropic-version"):
        return error(400, "anthropic-version: header is required")
    names = list(request.app[SIM_STATE].settings.models)
    data = [
        {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"} for m in names
    ]
    body = {
        "data": data,
        "has_more": False,
        "first_id": names[0] if names else None,
        "last_id": names[-1] if names else None,
    }
    return web.Response(body=_encoder.encode(body), content_type="application/json")


def register(app: web.Application) -> None:
    app.router.add_get("/anthropic/v1/models", models)
    app.router.add_post("/anthropic/v1/messages", messages)
    app.router.add_post("/anthropic/v1/messages/count_tokens", count_tokens)
    # api.anthropic.com's own path: the proxy tests reach the sim as
    # api.anthropic.com, with an unmodified SDK.
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
