"""Anthropic MessagesResponse -> canonical ChatResponse."""

from __future__ import annotations

from adapters.anthropic import wire as w
from adapters.anthropic.mapping import STRUCTURED_OUTPUT_TOOL, finish_reason, log, usage
from adapters.canonical import ChatResponse, Choice, FunctionCall, ResponseMessage, ToolCall
from adapters.wirekit import signatures
from adapters.wirekit.jsonio import dumps


def to_canonical(msg: w.MessagesResponse) -> ChatResponse:
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[ToolCall] = []
    structured = False
    signed = [b.signature for b in msg.content if b.type == "thinking" and b.signature]
    redacted = any(b.type == "redacted_thinking" for b in msg.content)
    for block in msg.content:
        if block.type == "text":
            texts.append(block.text or "")
        elif block.type == "thinking":
            thinking.append(block.thinking or "")
        elif block.type == "tool_use" and block.name == STRUCTURED_OUTPUT_TOOL:
            texts.append(dumps(block.input if block.input is not None else {}))
            structured = True
        elif block.type == "tool_use":
            calls.append(
                ToolCall(
                    id=block.id or "",
                    function=FunctionCall(
                        name=block.name or "", arguments=dumps(block.input if block.input is not None else {})
                    ),
                )
            )
        elif block.type == "redacted_thinking":
            continue  # encrypted; nothing a caller can read
        else:
            log.warning("anthropic: skipped unknown content block type %r", block.type)
    if calls and len(signed) == 1 and not redacted:
        # One signed thinking block before tool calls: keep its signature
        # in the first call id so the next turn can replay it.
        calls[0].id = signatures.join(calls[0].id, signed[0])
    reason = finish_reason(msg.stop_reason)
    if structured and not calls and reason == "tool_calls":
        # The structured-output tool call is the answer, not a tool call.
        reason = "stop"
    # With a structured answer, text the model wrote around the tool call is
    # preamble; the content must be the JSON alone to parse.
    content = texts[-1] if structured else "".join(texts)
    return ChatResponse(
        id=msg.id,
        model=msg.model,
        choices=[
            Choice(
                index=0,
                message=ResponseMessage(
                    content=content if (content or not calls) else None,
                    tool_calls=calls or None,
                    reasoning_content="".join(thinking) or None,
                ),
                finish_reason=reason,
            )
        ],
        usage=usage(msg.usage),
    )
