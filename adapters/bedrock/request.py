"""Canonical ChatRequest -> Bedrock ConverseRequest."""

from __future__ import annotations

from typing import Any

from adapters.anthropic.mapping import STRUCTURED_OUTPUT_TOOL, effort_thinking
from adapters.anthropic.request import JSON_OBJECT_INSTRUCTION, STRUCTURED_OUTPUT_INSTRUCTION
from adapters.bedrock import wire as w
from adapters.bedrock.mapping import log
from adapters.canonical import (
    AudioPart,
    ChatRequest,
    ContentPart,
    FilePart,
    ImagePart,
    Message,
    RefusalPart,
    TextPart,
    ToolChoiceNamed,
)
from adapters.wirekit import signatures
from adapters.wirekit.errors import unsupported
from adapters.wirekit.jsonio import parse_arguments
from adapters.wirekit.media import parse_data_uri

P = "bedrock"
FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}


def _image(part: ImagePart) -> w.ImageBlock:
    url = part.image_url.url
    parsed = parse_data_uri(url)
    if parsed is not None:
        fmt = FORMATS.get(parsed[0])
        if fmt is None:
            raise unsupported(P, f"image type {parsed[0]!r} is not accepted (png, jpeg, gif, webp)")
        return w.ImageBlock(format=fmt, source=w.ImageSource(bytes=parsed[1]))
    if url.startswith("s3://"):
        ext = url.rsplit(".", 1)[-1].lower()
        return w.ImageBlock(
            format="jpeg" if ext == "jpg" else ext, source=w.ImageSource(s3_location={"uri": url})
        )
    # Converse takes image bytes or S3 only; fetching a URL is I/O a codec
    # must not do.
    raise unsupported(P, "images must be base64 data: URIs or s3:// locations on Bedrock")


DOC_FORMATS = {
    "application/pdf": "pdf",
    "text/csv": "csv",
    "text/html": "html",
    "text/plain": "txt",
    "text/markdown": "md",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
}


def _document(part: FilePart, n: int) -> w.DocumentBlock:
    parsed = parse_data_uri(part.file.file_data or "")
    if parsed is None:
        raise unsupported(P, "file parts need file_data as a base64 data: URI (file ids are not portable)")
    fmt = DOC_FORMATS.get(parsed[0])
    if fmt is None:
        raise unsupported(P, f"document type {parsed[0]!r} is not accepted by Converse")
    # Converse requires a name: letters, digits, spaces, hyphens, brackets.
    stem = (part.file.filename or f"document {n + 1}").rsplit(".", 1)[0]
    name = "".join(c if c.isalnum() or c in " -()[]" else " " for c in stem).strip() or f"document {n + 1}"
    return w.DocumentBlock(format=fmt, name=name, source=w.DocumentSource(bytes=parsed[1]))


def _blocks(content: str | list[ContentPart] | None) -> list[w.ContentBlock]:
    if content is None:
        return []
    if isinstance(content, str):
        return [w.ContentBlock(text=content)] if content else []
    out: list[w.ContentBlock] = []
    for part in content:
        if isinstance(part, TextPart):
            out.append(w.ContentBlock(text=part.text))
        elif isinstance(part, RefusalPart):
            out.append(w.ContentBlock(text=part.refusal))
        elif isinstance(part, ImagePart):
            out.append(w.ContentBlock(image=_image(part)))
        elif isinstance(part, FilePart):
            out.append(w.ContentBlock(document=_document(part, len(out))))
        elif isinstance(part, AudioPart):
            raise unsupported(P, "input_audio parts are not supported on Bedrock Converse")
    return out


def _tool_result(msg: Message) -> w.ContentBlock:
    if not msg.tool_call_id:
        raise unsupported(P, "a tool message needs tool_call_id")
    content: list[w.ToolResultContent] = []
    for b in _blocks(msg.content):
        if b.text is not None:
            content.append(w.ToolResultContent(text=b.text))
        elif b.image is not None:
            content.append(w.ToolResultContent(image=b.image))
    return w.ContentBlock(
        tool_result=w.ToolResultBlock(
            tool_use_id=signatures.split(msg.tool_call_id)[0],
            content=content or [w.ToolResultContent(text="")],
        )
    )


def messages(req: ChatRequest) -> tuple[list[w.SystemBlock], list[w.BedrockMessage]]:
    system: list[w.SystemBlock] = []
    out: list[w.BedrockMessage] = []

    def append(role: str, blocks: list[w.ContentBlock]) -> None:
        if not blocks:
            return
        if out and out[-1].role == role:
            out[-1].content.extend(blocks)
        else:
            out.append(w.BedrockMessage(role=role, content=list(blocks)))

    for msg in req.messages:
        if msg.role in ("system", "developer"):
            system.append(w.SystemBlock(text=msg.text()))
        elif msg.role == "user":
            append("user", _blocks(msg.content))
        elif msg.role == "assistant":
            blocks = _blocks(msg.content)
            calls = msg.tool_calls or []
            # The signed reasoning block before tool use is replayed when its
            # signature came back in the first call id (wirekit.signatures).
            signature = signatures.split(calls[0].id)[1] if calls else None
            if signature and msg.reasoning_content:
                reasoning = w.ReasoningContent(
                    reasoning_text=w.ReasoningText(text=msg.reasoning_content, signature=signature)
                )
                blocks.insert(0, w.ContentBlock(reasoning_content=reasoning))
            for call in calls:
                blocks.append(
                    w.ContentBlock(
                        tool_use=w.ToolUseBlock(
                            tool_use_id=signatures.split(call.id)[0],
                            name=call.function.name,
                            input=parse_arguments(call.function.arguments),
                        )
                    )
                )
            append("assistant", blocks)
        elif msg.role in ("tool", "function"):
            append("user", [_tool_result(msg)])
    if not out:
        raise unsupported(P, "at least one user or assistant message is required")
    return system, out


def _tool_config(req: ChatRequest, schema: dict[str, Any] | None) -> w.ToolConfig | None:
    tools = [
        w.ToolDef(
            tool_spec=w.ToolSpec(
                name=t.function.name,
                description=t.function.description,
                input_schema=w.InputSchema(
                    json=t.function.parameters or {"type": "object", "properties": {}}
                ),
            )
        )
        for t in req.tools or []
    ]
    if any(t.tool_spec and t.tool_spec.name == STRUCTURED_OUTPUT_TOOL for t in tools):
        raise unsupported(P, f"the tool name {STRUCTURED_OUTPUT_TOOL!r} is reserved")
    tc = req.tool_choice
    choice: w.ToolChoice | None = None
    if isinstance(tc, ToolChoiceNamed):
        choice = w.ToolChoice(tool=w.SpecificTool(name=tc.function.name))
    elif tc == "required":
        choice = w.ToolChoice(any={})
    elif tc == "auto":
        choice = w.ToolChoice(auto={})
    elif tc == "none":
        # Converse has no "none": the tools are left out instead.
        tools = []
    elif tc is not None:
        raise unsupported(P, f"unknown tool_choice {tc!r}")
    if schema is not None:
        # json_schema through a tool whose input is the answer (as for
        # Anthropic); forced unless the caller's own tools must stay usable.
        tools.append(
            w.ToolDef(
                tool_spec=w.ToolSpec(
                    name=STRUCTURED_OUTPUT_TOOL,
                    description="Return the final answer as this tool's input.",
                    input_schema=w.InputSchema(json=schema),
                )
            )
        )
        if choice is None or choice.tool is None:
            choice = (
                w.ToolChoice(any={})
                if len(tools) > 1
                else w.ToolChoice(tool=w.SpecificTool(name=STRUCTURED_OUTPUT_TOOL))
            )
    if not tools:
        return None
    return w.ToolConfig(tools=tools, tool_choice=choice)


def _cache_requested(req: ChatRequest) -> bool:
    # nexus_ext.bedrock.cache_point, or the Anthropic-style request for
    # caching (e.g. an Anthropic client's cache_control, via the ingress).
    ext = req.nexus_ext or {}
    return bool(ext.get("bedrock", {}).get("cache_point") or ext.get("anthropic", {}).get("cache_control"))


def _mark_cache_points(system: list[w.SystemBlock], turns: list[w.BedrockMessage]) -> None:
    """Cache checkpoints after the system prompt and after the last user
    turn (tools get theirs in build, once the tool list is final)."""
    if system:
        system.append(w.SystemBlock(cache_point=w.DEFAULT_CACHE_POINT))
    for msg in reversed(turns):
        if msg.role == "user":
            msg.content.append(w.ContentBlock(cache_point=w.DEFAULT_CACHE_POINT))
            break


def _thinking_replayable(turns: list[w.BedrockMessage]) -> bool:
    """Claude with thinking on requires the last assistant turn, when it
    used tools, to start with its signed reasoning (as on Anthropic)."""
    last = next((m for m in reversed(turns) if m.role == "assistant"), None)
    if last is None or not any(b.tool_use is not None for b in last.content):
        return True
    return last.content[0].reasoning_content is not None


def build(req: ChatRequest, model: str = "") -> w.ConverseRequest:
    if req.n is not None and req.n > 1:
        raise unsupported(P, "n > 1 is not supported by Bedrock Converse")
    ext = (req.nexus_ext or {}).get("bedrock", {})
    system, turns = messages(req)
    schema = None
    rf = req.response_format
    if rf is not None and rf.type == "json_object":
        system.append(w.SystemBlock(text=JSON_OBJECT_INSTRUCTION))
    elif rf is not None and rf.type == "json_schema":
        if rf.json_schema is None or rf.json_schema.schema is None:
            raise unsupported(P, "response_format json_schema needs a schema")
        schema = rf.json_schema.schema
        system.append(w.SystemBlock(text=STRUCTURED_OUTPUT_INSTRUCTION))
    stop = [req.stop] if isinstance(req.stop, str) else req.stop
    inference = w.InferenceConfig(
        max_tokens=req.output_budget(),
        temperature=req.temperature,
        top_p=req.top_p,
        stop_sequences=stop or None,
    )
    extra: dict[str, Any] = dict(ext.get("additional_model_request_fields") or {})
    thinking = ext.get("thinking") or effort_thinking(req.reasoning_effort, model, req.output_budget())
    if thinking and _thinking_replayable(turns):
        extra["thinking"] = thinking
    elif thinking:
        log.warning("bedrock: thinking turned off: the tool-use turn lacks its signed reasoning block")
    if "top_k" in ext:
        extra["top_k"] = ext["top_k"]
    if _cache_requested(req):
        _mark_cache_points(system, turns)
    body = w.ConverseRequest(
        messages=turns,
        system=system or None,
        inference_config=inference if inference != w.InferenceConfig() else None,
        tool_config=_tool_config(req, schema),
        additional_model_request_fields=extra or None,
    )
    if body.tool_config is not None and _cache_requested(req):
        body.tool_config.tools.append(w.ToolDef(cache_point=w.DEFAULT_CACHE_POINT))
    return body
