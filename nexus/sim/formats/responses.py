"""OpenAI's Responses API (POST /v1/responses), unary and streamed, as the
API reference documents it: input items in, output items (message,
function_call, reasoning) and usage out; the stream is response.created,
output items with their deltas, then response.completed."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from aiohttp import web

from nexus.sim import core
from nexus.sim.formats import common

_encoder = msgspec.json.Encoder()


class _Request(msgspec.Struct, forbid_unknown_fields=True):
    model: str
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    stream: bool | None = None
    max_output_tokens: int | None = None
    text: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    metadata: dict[str, str] | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None
    include: list[str] | None = None
    truncation: str | None = None
    service_tier: str | None = None
    stream_options: dict[str, Any] | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None


_decode = msgspec.json.Decoder(_Request).decode


def _error(status: int, message: str) -> web.Response:
    body = {
        "error": {
            "message": message,
            "type": "invalid_request_error" if status < 500 else "server_error",
            "param": None,
            "code": None,
        }
    }
    return web.Response(status=status, body=_encoder.encode(body), content_type="application/json")


def _ask(req: _Request) -> core.Ask:
    texts: list[str] = [req.instructions] if req.instructions else []
    images = 0
    last = ""
    if isinstance(req.input, str):
        texts.append(req.input)
    else:
        for item in req.input:
            kind = item.get("type", "message")
            last = kind
            content = item.get("content")
            if kind == "message":
                if isinstance(content, str):
                    texts.append(content)
                elif isinstance(content, list):
                    texts.append("".join(str(p.get("text", "")) for p in content if isinstance(p, dict)))
                    images += sum(
                        1 for p in content if isinstance(p, dict) and p.get("type") == "input_image"
                    )
                else:
                    raise common.Rejected(400, "message content must be a string or an array")
            elif kind == "function_call_output":
                texts.append(str(item.get("output", "")))
            elif kind not in ("function_call", "reasoning"):
                raise common.Rejected(400, f"unknown input item type {kind!r}")
    tools = [
        (str(t.get("name")), t.get("parameters") or {})
        for t in req.tools or ()
        if t.get("type") == "function"
    ]
    fmt = (req.text or {}).get("format") or {}
    choice = (
        req.tool_choice if isinstance(req.tool_choice, str) else (req.tool_choice or {}).get("name", "auto")
    )
    return core.Ask(
        model=req.model,
        texts=texts,
        tools=tools,
        tool_choice=str(choice),
        after_tool_result=last == "function_call_output",
        images=images,
        json_schema=fmt.get("schema") if fmt.get("type") == "json_schema" else None,
        json_mode=fmt.get("type") == "json_object",
        reasoning=bool(req.reasoning),
        max_tokens=req.max_output_tokens,
        stream=bool(req.stream),
    )


def _usage(a: core.Answer) -> dict[str, Any]:
    return {
        "input_tokens": a.prompt_tokens,
        "input_tokens_details": {"cached_tokens": a.cached_tokens},
        "output_tokens": a.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": a.reasoning_tokens},
        "total_tokens": a.total_tokens,
    }


def _output(a: core.Answer) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if a.calls:
        for i, c in enumerate(a.calls):
            out.append(
                {
                    "type": "function_call",
                    "id": f"fc_{a.id}_{i}",
                    "call_id": c.id,
                    "name": c.name,
                    "arguments": c.arguments_json,
                    "status": "completed",
                }
            )
    else:
        out.append(
            {
                "type": "message",
                "id": f"msg_{a.id}",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": a.text, "annotations": []}],
            }
        )
    return out


def _response(
    req: _Request, a: core.Answer, status: str, output: list[dict[str, Any]], usage: Any
) -> dict[str, Any]:
    return {
        "id": f"resp_{a.id}",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": None,
        "model": req.model,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
    }


async def create(request: web.Request) -> web.StreamResponse:
    admitted = await common.admit(request, _error, common.bearer)
    if isinstance(admitted, web.Response):
        return admitted
    raw, b = admitted
    try:
        req = _decode(raw)
        ask = _ask(req)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return _error(400, f"Invalid request: {exc}")
    except common.Rejected as exc:
        return _error(exc.status, exc.message)
    b, failed = await common.act(b, ask.texts, _error)
    if failed is not None:
        return failed
    a = core.answer(ask, b)
    if not req.stream:
        return web.Response(
            body=_encoder.encode(_response(req, a, "completed", _output(a), _usage(a))),
            content_type="application/json",
        )

    out = await common.start_stream(request)
    seq = [0]

    def event(kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": seq[0], **fields}
        seq[0] += 1
        return b"event: " + kind.encode() + b"\ndata: " + _encoder.encode(payload) + b"\n\n"

    async def fail() -> None:
        await out.write(
            event(
                "response.failed",
                response={
                    **_response(req, a, "failed", [], None),
                    "error": {"code": "server_error", "message": "The model failed."},
                },
            )
        )

    await out.write(event("response.created", response=_response(req, a, "in_progress", [], None)))
    sent = [0]
    items = _output(a)
    for index, item in enumerate(items):
        if item["type"] == "message":
            await out.write(
                event(
                    "response.output_item.added",
                    output_index=index,
                    item={**item, "status": "in_progress", "content": []},
                )
            )
            part = {"type": "output_text", "text": "", "annotations": []}
            await out.write(
                event(
                    "response.content_part.added",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    part=part,
                )
            )

            def delta(i: int, p: str, item: dict[str, Any] = item, index: int = index) -> bytes:
                return event(
                    "response.output_text.delta",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    delta=p,
                )

            if not await common.pieces(request, out, b, a.pieces, delta, fail, sent):
                return out
            await out.write(
                event(
                    "response.output_text.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    text=a.text,
                )
            )
            await out.write(
                event(
                    "response.content_part.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    part={**part, "text": a.text},
                )
            )
        else:
            await out.write(
                event(
                    "response.output_item.added",
                    output_index=index,
                    item={**item, "status": "in_progress", "arguments": ""},
                )
            )
            args = item["arguments"]

            def delta(i: int, p: str, item: dict[str, Any] = item, index: int = index) -> bytes:
                return event(
                    "response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=p
                )

            if not await common.pieces(
                request, out, b, [args[: len(args) // 2], args[len(args) // 2 :]], delta, fail, sent
            ):
                return out
            await out.write(
                event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    arguments=args,
                )
            )
        await out.write(event("response.output_item.done", output_index=index, item=item))
    await out.write(event("response.completed", response=_response(req, a, "completed", items, _usage(a))))
    await out.write_eof()
    return out
