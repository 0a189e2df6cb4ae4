"""Cohere's v2 API under /cohere: POST /v2/chat (unary and SSE stream
events: message-start, content-start/delta/end, tool-plan-delta,
tool-call-start/delta/end, message-end) and POST /v2/embed, per
https://docs.cohere.com/reference/chat and /reference/embed.  Bearer
auth; unknown fields, bad roles, tool messages without a matching call,
and embed requests without input_type are 400s; errors are
``{"id": ..., "message": ...}``."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from aiohttp import web

from nexus.sim import core, text
from nexus.sim.formats import common
from nexus.sim.state import SIM_STATE

_encoder = msgspec.json.Encoder()


def error(status: int, message: str) -> web.Response:
    return web.Response(
        status=status,
        body=_encoder.encode({"id": "err-sim", "message": message}),
        content_type="application/json",
    )


class _Strict(msgspec.Struct, forbid_unknown_fields=True):
    pass


class ImageURL(_Strict):
    url: str
    detail: str | None = None


class ContentItem(_Strict):
    type: Literal["text", "image_url", "document", "thinking"]
    text: str | None = None
    image_url: ImageURL | None = None
    thinking: str | None = None
    document: dict[str, Any] | None = None


class FunctionCall(_Strict):
    name: str
    arguments: str


class ToolCall(_Strict):
    id: str
    type: Literal["function"]
    function: FunctionCall


class Message(_Strict):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[ContentItem] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_plan: str | None = None
    tool_call_id: str | None = None
    citations: list[Any] | None = None


class Function(_Strict):
    name: str
    parameters: dict[str, Any]
    description: str | None = None


class ToolDef(_Strict):
    type: Literal["function"]
    function: Function


class ResponseFormat(_Strict):
    type: Literal["text", "json_object"]
    json_schema: dict[str, Any] | None = None


class Thinking(_Strict):
    type: Literal["enabled", "disabled"]
    token_budget: int | None = None


class ChatRequest(_Strict):
    model: str
    messages: list[Message]
    stream: bool | None = None
    tools: list[ToolDef] | None = None
    strict_tools: bool | None = None
    documents: list[Any] | None = None
    citation_options: dict[str, Any] | None = None
    response_format: ResponseFormat | None = None
    safety_mode: Literal["CONTEXTUAL", "STRICT", "OFF"] | None = None
    max_tokens: int | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    seed: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    k: int | None = None
    p: float | None = None
    logprobs: bool | None = None
    tool_choice: Literal["REQUIRED", "NONE"] | None = None
    thinking: Thinking | None = None
    priority: int | None = None


class EmbedRequest(_Strict):
    model: str
    input_type: Literal["search_document", "search_query", "classification", "clustering", "image"]
    # Required in v2 (https://docs.cohere.com/docs/migrating-v1-to-v2#embed).
    embedding_types: list[Literal["float", "int8", "uint8", "binary", "ubinary", "base64"]]
    texts: list[str] | None = None
    images: list[str] | None = None
    inputs: list[Any] | None = None
    output_dimension: int | None = None
    truncate: Literal["NONE", "START", "END"] | None = None
    max_tokens: int | None = None


_chat = msgspec.json.Decoder(ChatRequest).decode
_embed = msgspec.json.Decoder(EmbedRequest).decode


def _ask(req: ChatRequest) -> core.Ask:
    texts: list[str] = []
    images = 0
    calls: set[str] = set()
    after_result = False
    for m in req.messages:
        after_result = m.role == "tool"
        if m.role == "tool" and m.tool_call_id not in calls:
            raise common.Rejected(400, "tool message tool_call_id does not match any previous tool call")
        for c in m.tool_calls or ():
            if m.role != "assistant":
                raise common.Rejected(400, "only assistant messages may carry tool_calls")
            calls.add(c.id)
        if isinstance(m.content, str):
            texts.append(m.content)
        elif m.content:
            if any(c.type == "image_url" for c in m.content) and m.role != "user":
                raise common.Rejected(400, "image content is only allowed in user messages")
            images += sum(1 for c in m.content if c.type == "image_url")
            texts.append("".join(c.text or "" for c in m.content if c.type == "text"))
        else:
            texts.append("")
    rf = req.response_format
    choice = {"REQUIRED": "required", "NONE": "none"}.get(req.tool_choice or "", "auto")
    return core.Ask(
        model=req.model,
        texts=texts,
        tools=[(t.function.name, t.function.parameters) for t in req.tools or ()],
        tool_choice=choice,
        after_tool_result=after_result,
        images=images,
        json_schema=rf.json_schema if rf is not None and rf.type == "json_object" else None,
        json_mode=rf is not None and rf.type == "json_object" and rf.json_schema is None,
        reasoning=req.thinking is not None and req.thinking.type == "enabled",
        max_tokens=req.max_tokens,
    )


_FINISH = {"stop": "COMPLETE", "length": "MAX_TOKENS", "tool_calls": "TOOL_CALL"}


def _usage(a: core.Answer) -> dict[str, Any]:
    tokens = {"input_tokens": a.prompt_tokens, "output_tokens": a.completion_tokens}
    usage: dict[str, Any] = {"billed_units": dict(tokens), "tokens": tokens}
    if a.cached_tokens:
        usage["cached_tokens"] = a.cached_tokens
    return usage


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + _encoder.encode({"type": kind, **payload}) + b"\n\n"


def _calls(a: core.Answer) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}
        for c in a.calls
    ]


async def chat(request: web.Request) -> web.StreamResponse:
    admitted = await common.admit(request, error, common.bearer)
    if isinstance(admitted, web.Response):
        return admitted
    raw, b = admitted
    try:
        req = _chat(raw)
        ask = _ask(req)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return error(400, f"invalid request: {exc}")
    except common.Rejected as exc:
        return error(exc.status, exc.message)
    b, failed = await common.act(b, ask.texts, error)
    if failed is not None:
        return failed
    a = core.answer(ask, b)
    rid = "co-" + a.id
    if not req.stream:
        content: list[dict[str, Any]] = []
        if a.reasoning:
            content.append({"type": "thinking", "thinking": a.reasoning_text})
        if a.pieces:
            content.append({"type": "text", "text": a.text})
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if a.calls:
            message["tool_plan"] = "I will call the tool."
            message["tool_calls"] = _calls(a)
        body = {"id": rid, "finish_reason": _FINISH[a.finish], "message": message, "usage": _usage(a)}
        return web.Response(body=_encoder.encode(body), content_type="application/json")

    out = await common.start_stream(request)

    async def fail() -> None:
        # Cohere reports a failed generation as a message-end with ERROR.
        await out.write(
            _event("message-end", {"delta": {"finish_reason": "ERROR", "error": "internal error"}})
        )

    start = {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}
    await out.write(_event("message-start", {"id": rid, "delta": {"message": start}}))
    sent = [0]
    index = 0
    if a.reasoning:
        await out.write(
            _event(
                "content-start",
                {"index": index, "delta": {"message": {"content": {"type": "thinking", "thinking": ""}}}},
            )
        )

        def think(_: int, piece: str) -> bytes:
            return _event(
                "content-delta", {"index": index, "delta": {"message": {"content": {"thinking": piece}}}}
            )

        if not await common.pieces(request, out, b, a.reasoning, think, fail, sent):
            return out
        await out.write(_event("content-end", {"index": index}))
        index += 1
    if a.pieces:
        await out.write(
            _event(
                "content-start",
                {"index": index, "delta": {"message": {"content": {"type": "text", "text": ""}}}},
            )
        )

        def say(_: int, piece: str) -> bytes:
            return _event(
                "content-delta", {"index": index, "delta": {"message": {"content": {"text": piece}}}}
            )

        if not await common.pieces(request, out, b, a.pieces, say, fail, sent):
            return out
        await out.write(_event("content-end", {"index": index}))
    if a.calls:
        await out.write(
            _event("tool-plan-delta", {"delta": {"message": {"tool_plan": "I will call the tool."}}})
        )
    for i, c in enumerate(a.calls):
        first = {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": ""}}
        await out.write(_event("tool-call-start", {"index": i, "delta": {"message": {"tool_calls": first}}}))
        args = c.arguments_json

        def arg(_: int, piece: str, i: int = i) -> bytes:
            return _event(
                "tool-call-delta",
                {"index": i, "delta": {"message": {"tool_calls": {"function": {"arguments": piece}}}}},
            )

        if not await common.pieces(
            request, out, b, [args[: len(args) // 2], args[len(args) // 2 :]], arg, fail, sent
        ):
            return out
        await out.write(_event("tool-call-end", {"index": i}))
    await out.write(
        _event("message-end", {"delta": {"finish_reason": _FINISH[a.finish], "usage": _usage(a)}})
    )
    await out.write_eof()
    return out


async def embed(request: web.Request) -> web.StreamResponse:
    admitted = await common.admit(request, error, common.bearer)
    if isinstance(admitted, web.Response):
        return admitted
    raw, b = admitted
    try:
        req = _embed(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return error(400, f"invalid request: {exc}")
    texts = req.texts or []
    if not texts:
        return error(400, "texts must not be empty")
    b, failed = await common.act(b, texts, error)
    if failed is not None:
        return failed
    dims = req.output_dimension or request.app[SIM_STATE].settings.embedding_dimensions
    tokens = sum(text.count_text_tokens(t) for t in texts)
    body = {
        "id": "emb-sim",
        "embeddings": {"float": [text.embedding(req.model, t, dims) for t in texts]},
        "texts": texts,
        "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": tokens}},
        "response_type": "embeddings_by_type",
    }
    return web.Response(body=_encoder.encode(body), content_type="application/json")


def register(app: web.Application) -> None:
    app.router.add_post("/cohere/v2/chat", chat)
    app.router.add_post("/cohere/v2/embed", embed)
