"""Canonical ChatRequest -> Anthropic MessagesRequest."""

from __future__ import annotations

from typing import Any

import msgspec

from adapters.anthropic import caching
from adapters.anthropic import wire as w
from adapters.anthropic.mapping import STRUCTURED_OUTPUT_TOOL, default_max_tokens, effort_thinking, log
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
from adapters.wirekit.jsonio import encode, parse_arguments
from adapters.wirekit.media import parse_data_uri

P = "anthropic"

STRUCTURED_OUTPUT_INSTRUCTION = (
    f"Give your final answer by calling the {STRUCTURED_OUTPUT_TOOL} tool; its input is the answer."
)
JSON_OBJECT_INSTRUCTION = (
    "Respond with a single valid JSON object and nothing else: no prose, no code fences."
)


def image_block(part: ImagePart) -> w.ImageBlock:
    url = part.image_url.url
    parsed = parse_data_uri(url)
    if parsed is not None:
        return w.ImageBlock(source=w.Base64Source(media_type=parsed[0], data=parsed[1]))
    if url.startswith(("https://", "http://")):
        return w.ImageBlock(source=w.URLSource(url=url))
    raise unsupported(P, "image_url must be an http(s) URL or a base64 data: URI")


def _document(part: FilePart) -> w.DocumentBlock:
    parsed = parse_data_uri(part.file.file_data or "")
    if parsed is None:
        raise unsupported(P, "file parts need file_data as a base64 data: URI (file ids are not portable)")
    media_type, data = parsed
    if media_type != "application/pdf":
        raise unsupported(P, f"document type {media_type!r} is not accepted (PDF only)")
    return w.DocumentBlock(source=w.Base64Source(media_type=media_type, data=data), title=part.file.filename)


def _user_blocks(content: str | list[ContentPart] | None) -> list[w.RequestBlock]:
    if content is None:
        return []
    if isinstance(content, str):
        return [w.TextBlock(text=content)] if content else []
    out: list[w.RequestBlock] = []
    for part in content:
        if isinstance(part, TextPart):
            out.append(w.TextBlock(text=part.text))
        elif isinstance(part, ImagePart):
            out.append(image_block(part))
        elif isinstance(part, RefusalPart):
            out.append(w.TextBlock(text=part.refusal))
        elif isinstance(part, AudioPart):
            raise unsupported(P, "input_audio parts are not accepted by Anthropic models")
        elif isinstance(part, FilePart):
            out.append(_document(part))
    return out


def _tool_result(msg: Message) -> w.ToolResultBlock:
    if not msg.tool_call_id:
        raise unsupported(P, "a tool message needs tool_call_id")
    content: str | list[w.TextBlock | w.ImageBlock]
    if msg.content is None or isinstance(msg.content, str):
        content = msg.content or ""
    else:
        blocks: list[w.TextBlock | w.ImageBlock] = []
        for b in _user_blocks(msg.content):
            if isinstance(b, w.TextBlock | w.ImageBlock):
                blocks.append(b)
        content = blocks
    return w.ToolResultBlock(tool_use_id=signatures.split(msg.tool_call_id)[0], content=content)


def _assistant_blocks(msg: Message) -> list[w.RequestBlock]:
    # Anthropic accepts thinking only with the signature it issued.  The
    # signature of a turn that called tools rides in its first tool-call id
    # (wirekit.signatures); with it and the reasoning text the signed block
    # is rebuilt.  Unsigned reasoning is not sent: it would be rejected.
    out: list[w.RequestBlock] = []
    calls = msg.tool_calls or []
    if calls and msg.reasoning_content:
        signature = signatures.split(calls[0].id)[1]
        if signature:
            out.append(w.ThinkingBlock(thinking=msg.reasoning_content, signature=signature))
    text = msg.text() if not isinstance(msg.content, str) else msg.content
    if text:
        out.append(w.TextBlock(text=text))
    for call in calls:
        out.append(
            w.ToolUseBlock(
                id=signatures.split(call.id)[0],
                name=call.function.name,
                input=parse_arguments(call.function.arguments),
            )
        )
    return out


def _sampling(
    req: ChatRequest, ext: dict[str, Any], thinking: w.ThinkingParam | None
) -> tuple[float | None, float | None, int | None]:
    """OpenAI's temperature runs 0-2, Anthropic's 0-1: clamp rather than
    fail.  With thinking on Anthropic accepts no temperature or top_k and a
    top_p of at least 0.95, so those are dropped or raised."""
    temperature = None if req.temperature is None else min(req.temperature, 1.0)
    top_p, top_k = req.top_p, ext.get("top_k")
    if thinking is not None and thinking.type != "disabled":
        temperature, top_k = None, None
        if top_p is not None:
            top_p = max(top_p, 0.95)
    return temperature, top_p, top_k


def _thinking_replayable(thinking: w.ThinkingParam | None, messages: list[w.MessageParam]) -> bool:
    """With thinking on, Anthropic requires the last assistant turn, when it
    called tools, to start with its signed thinking block.  If it cannot be
    rebuilt (the client did not send reasoning_content back), thinking is
    turned off for this call rather than failing it with a 400."""
    if thinking is None or thinking.type == "disabled":
        return True
    last = next((m for m in reversed(messages) if m.role == "assistant"), None)
    if last is None or isinstance(last.content, str):
        return True
    uses_tools = any(isinstance(b, w.ToolUseBlock) for b in last.content)
    return not uses_tools or isinstance(last.content[0], w.ThinkingBlock | w.RedactedThinkingBlock)


def _messages(req: ChatRequest) -> tuple[list[str], list[w.MessageParam]]:
    system: list[str] = []
    out: list[w.MessageParam] = []

    def append(role: str, blocks: list[w.RequestBlock]) -> None:
        if not blocks:
            return
        # Anthropic wants user/assistant turns; consecutive same-role
        # messages (e.g. several tool results) are merged into one turn.
        if out and out[-1].role == role:
            prev = out[-1].content
            assert isinstance(prev, list)  # we only build lists
            prev.extend(blocks)
        else:
            out.append(w.MessageParam(role="user" if role == "user" else "assistant", content=list(blocks)))

    for msg in req.messages:
        if msg.role in ("system", "developer"):
            if out:
                # A late system message keeps its position as user text.
                append("user", [w.TextBlock(text=msg.text())])
            else:
                system.append(msg.text())
        elif msg.role == "user":
            append("user", _user_blocks(msg.content))
        elif msg.role == "assistant":
            append("assistant", _assistant_blocks(msg))
        elif msg.role in ("tool", "function"):
            append("user", [_tool_result(msg)])
    if not out:
        raise unsupported(P, "at least one user or assistant message is required")
    return system, out


def _tools(req: ChatRequest) -> list[w.ToolParam] | None:
    if not req.tools:
        return None
    out = []
    for tool in req.tools:
        fn = tool.function
        if fn.name == STRUCTURED_OUTPUT_TOOL:
            raise unsupported(P, f"the tool name {STRUCTURED_OUTPUT_TOOL!r} is reserved")
        out.append(
            w.ToolParam(
                name=fn.name,
                description=fn.description,
                input_schema=fn.parameters or {"type": "object", "properties": {}},
            )
        )
    return out


def _tool_choice(req: ChatRequest) -> w.ToolChoiceParam | None:
    tc = req.tool_choice
    choice: w.ToolChoiceParam | None
    if tc is None:
        choice = None
    elif isinstance(tc, ToolChoiceNamed):
        choice = w.ToolChoiceParam(type="tool", name=tc.function.name)
    elif tc == "auto":
        choice = w.ToolChoiceParam(type="auto")
    elif tc == "required":
        choice = w.ToolChoiceParam(type="any")
    elif tc == "none":
        choice = w.ToolChoiceParam(type="none")
    else:
        raise unsupported(P, f"unknown tool_choice {tc!r}")
    if req.parallel_tool_calls is False and req.tools:
        choice = choice or w.ToolChoiceParam(type="auto")
        if choice.type != "none":
            choice.disable_parallel_tool_use = True
    return choice


def _thinking(ext: dict[str, Any], req: ChatRequest, model: str) -> w.ThinkingParam | None:
    raw = ext.get("thinking") or effort_thinking(req.reasoning_effort, model, req.output_budget())
    if raw is None:
        return None
    try:
        return msgspec.convert(raw, w.ThinkingParam)
    except msgspec.ValidationError as e:
        raise unsupported(P, f"nexus_ext.anthropic.thinking is invalid ({e})") from None


def build(req: ChatRequest, model: str) -> w.MessagesRequest:
    if req.n is not None and req.n > 1:
        raise unsupported(P, "n > 1 is not supported by Anthropic")
    ext = (req.nexus_ext or {}).get("anthropic", {})
    system, messages = _messages(req)
    tools = _tools(req)
    tool_choice = _tool_choice(req)
    thinking = _thinking(ext, req, model)
    if not _thinking_replayable(thinking, messages):
        log.warning("anthropic: thinking turned off: the tool-use turn lacks its signed thinking block")
        thinking = None

    max_tokens = req.output_budget()
    if max_tokens is None:
        max_tokens = default_max_tokens(model)
        if thinking and thinking.budget_tokens and max_tokens <= thinking.budget_tokens:
            max_tokens = thinking.budget_tokens + DEFAULT_ANSWER_ROOM

    rf = req.response_format
    if rf is not None and rf.type == "json_object":
        system.append(JSON_OBJECT_INSTRUCTION)
    elif rf is not None and rf.type == "json_schema":
        if rf.json_schema is None or rf.json_schema.schema is None:
            raise unsupported(P, "response_format json_schema needs a schema")
        tools, tool_choice = _structured_output(
            rf.json_schema.schema, rf.json_schema.description, tools, tool_choice, thinking
        )
        system.append(STRUCTURED_OUTPUT_INSTRUCTION)

    temperature, top_p, top_k = _sampling(req, ext, thinking)
    if (
        thinking is not None
        and thinking.type != "disabled"
        and tool_choice
        and tool_choice.type in ("any", "tool")
    ):
        # Anthropic refuses forced tool use with thinking; let the model choose.
        log.info("anthropic: tool_choice %s relaxed to auto because thinking is on", tool_choice.type)
        tool_choice = w.ToolChoiceParam(
            type="auto", disable_parallel_tool_use=tool_choice.disable_parallel_tool_use
        )
    stop = [req.stop] if isinstance(req.stop, str) else req.stop
    user_id = req.user or (req.metadata or {}).get("user_id")
    body = w.MessagesRequest(
        model=model,
        max_tokens=max_tokens,
        messages=messages,
        system="\n\n".join(s for s in system if s) or None,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        stop_sequences=stop or None,
        stream=True if req.stream else None,
        tools=tools,
        tool_choice=tool_choice,
        thinking=thinking,
        metadata=w.RequestMetadata(user_id=user_id) if user_id else None,
        service_tier=ext.get("service_tier"),
    )
    cc = caching.requested(ext)
    if cc is not None:
        caching.mark(body, cc)
    return body


def with_server_tools(body: w.MessagesRequest, req: ChatRequest) -> bytes:
    """The encoded body, with any Anthropic server tools an Anthropic client
    sent (kept raw in nexus_ext.anthropic.server_tools) put back."""
    raw = (req.nexus_ext or {}).get("anthropic", {}).get("server_tools")
    if not raw:
        return encode(body)
    out: dict[str, Any] = msgspec.to_builtins(body)
    out["tools"] = [*(out.get("tools") or []), *raw]
    return encode(out)


# When max_tokens is synthesised for a thinking request it must exceed the
# thinking budget; this much is left for the visible answer.
DEFAULT_ANSWER_ROOM = 4096


def _structured_output(
    schema: dict[str, Any],
    description: str | None,
    tools: list[w.ToolParam] | None,
    choice: w.ToolChoiceParam | None,
    thinking: w.ThinkingParam | None,
) -> tuple[list[w.ToolParam], w.ToolChoiceParam]:
    """json_schema via a tool whose input_schema is the schema.  Forcing
    that tool is the reliable way, but Anthropic refuses a forced tool with
    extended thinking, and forcing it would also forbid the caller's own
    tools; in those cases the model is told to use it instead (``any``/auto)."""
    out_tool = w.ToolParam(
        name=STRUCTURED_OUTPUT_TOOL,
        description=description or "Return the final answer as this tool's input.",
        input_schema=schema,
    )
    all_tools = [*(tools or []), out_tool]
    thinking_on = thinking is not None and thinking.type != "disabled"
    caller_tools = bool(tools) and not (choice and choice.type == "none")
    if choice is not None and choice.type == "tool":
        return all_tools, choice  # the caller forced its own tool: keep that
    if thinking_on:
        return all_tools, w.ToolChoiceParam(type="auto")
    if caller_tools:
        return all_tools, w.ToolChoiceParam(type="any")
    return all_tools, w.ToolChoiceParam(type="tool", name=STRUCTURED_OUTPUT_TOOL)
