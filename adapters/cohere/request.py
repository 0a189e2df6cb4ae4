"""Canonical requests -> Cohere v2 chat / embed bodies."""

from __future__ import annotations

from typing import Any

import msgspec

from adapters.canonical import (
    AudioPart,
    ChatRequest,
    ContentPart,
    EmbeddingRequest,
    FilePart,
    ImagePart,
    Message,
    RefusalPart,
    TextPart,
    ToolChoiceNamed,
)
from adapters.cohere import wire as w
from adapters.wirekit.errors import unsupported

P = "cohere"


def _content(content: str | list[ContentPart] | None) -> str | list[w.ContentItem]:
    if content is None or isinstance(content, str):
        return content or ""
    out: list[w.ContentItem] = []
    for part in content:
        if isinstance(part, TextPart):
            out.append(w.ContentItem(type="text", text=part.text))
        elif isinstance(part, RefusalPart):
            out.append(w.ContentItem(type="text", text=part.refusal))
        elif isinstance(part, ImagePart):
            image: dict[str, Any] = {"url": part.image_url.url}
            if part.image_url.detail:
                image["detail"] = part.image_url.detail
            out.append(w.ContentItem(type="image_url", image_url=image))
        elif isinstance(part, AudioPart | FilePart):
            raise unsupported(P, f"{type(part).__name__} is not supported by Cohere chat")
    return out


def _message(msg: Message) -> w.ChatMessage:
    if msg.role in ("system", "developer"):
        return w.ChatMessage(role="system", content=msg.text())
    if msg.role == "user":
        return w.ChatMessage(role="user", content=_content(msg.content))
    if msg.role == "assistant":
        calls = [
            w.ToolCall(
                id=c.id, function=w.FunctionCall(name=c.function.name, arguments=c.function.arguments or "{}")
            )
            for c in msg.tool_calls or []
        ]
        return w.ChatMessage(
            role="assistant",
            content=(msg.text() or None) if calls else msg.text(),
            tool_calls=calls or None,
            # Cohere wants the plan back with the calls it led to.
            tool_plan=msg.reasoning_content if calls else None,
        )
    if not msg.tool_call_id:
        raise unsupported(P, "a tool message needs tool_call_id")
    return w.ChatMessage(role="tool", tool_call_id=msg.tool_call_id, content=msg.text() or "")


def build(req: ChatRequest, model: str) -> w.ChatRequest:
    if req.n is not None and req.n > 1:
        raise unsupported(P, "n > 1 is not supported by Cohere")
    ext = (req.nexus_ext or {}).get("cohere", {})
    tools = [
        w.ToolDef(
            function=w.ToolFunction(
                name=t.function.name, description=t.function.description, parameters=t.function.parameters
            )
        )
        for t in req.tools or []
    ]
    tc = req.tool_choice
    choice: str | None = None
    if isinstance(tc, ToolChoiceNamed):
        # Cohere cannot name a tool: offer only that one and require a call.
        tools = [t for t in tools if t.function.name == tc.function.name]
        if not tools:
            raise unsupported(P, f"tool_choice names {tc.function.name!r}, which is not among the tools")
        choice = "REQUIRED"
    elif tc == "required":
        choice = "REQUIRED"
    elif tc == "none":
        choice = "NONE"
    rf = req.response_format
    fmt = None
    if rf is not None and rf.type == "json_object":
        fmt = w.ResponseFormat(type="json_object")
    elif rf is not None and rf.type == "json_schema":
        if rf.json_schema is None or rf.json_schema.schema is None:
            raise unsupported(P, "response_format json_schema needs a schema")
        fmt = w.ResponseFormat(type="json_object", json_schema=rf.json_schema.schema)
    thinking = None
    if "thinking" in ext:
        try:
            thinking = msgspec.convert(ext["thinking"], w.Thinking)
        except msgspec.ValidationError as e:
            raise unsupported(P, f"nexus_ext.cohere.thinking is invalid ({e})") from None
    stop = [req.stop] if isinstance(req.stop, str) else req.stop
    return w.ChatRequest(
        model=model,
        messages=[_message(m) for m in req.messages],
        stream=True if req.stream else None,
        tools=tools or None,
        tool_choice=choice,
        max_tokens=req.output_budget(),
        temperature=req.temperature,
        p=req.top_p,
        k=ext.get("k"),
        stop_sequences=stop or None,
        seed=req.seed,
        frequency_penalty=req.frequency_penalty,
        presence_penalty=req.presence_penalty,
        response_format=fmt,
        thinking=thinking,
        safety_mode=ext.get("safety_mode"),
    )


def build_embed(req: EmbeddingRequest, model: str) -> w.EmbedRequest:
    ext = (req.nexus_ext or {}).get("cohere", {})
    if isinstance(req.input, str):
        texts = [req.input]
    elif all(isinstance(x, str) for x in req.input):
        texts = [x for x in req.input if isinstance(x, str)]
    else:
        raise unsupported(P, "token-array embedding input is not supported; send text")
    if req.encoding_format == "base64":
        raise unsupported(P, "encoding_format base64 is not supported; use float")
    return w.EmbedRequest(
        model=model,
        texts=texts,
        # v3+ embed models require input_type; documents are the common case.
        input_type=str(ext.get("input_type", "search_document")),
        embedding_types=["float"],
        output_dimension=req.dimensions,
        truncate=ext.get("truncate"),
    )
