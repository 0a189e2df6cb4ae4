"""Bedrock ConverseResponse -> canonical ChatResponse."""

from __future__ import annotations

from adapters.anthropic.mapping import STRUCTURED_OUTPUT_TOOL
from adapters.bedrock import wire as w
from adapters.bedrock.mapping import finish_reason, log, usage
from adapters.canonical import ChatResponse, Choice, FunctionCall, ResponseMessage, ToolCall
from adapters.wirekit import signatures
from adapters.wirekit.jsonio import dumps


def to_canonical(resp: w.ConverseResponse, model: str, response_id: str = "") -> ChatResponse:
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[ToolCall] = []
    structured = False
    blocks = resp.output.message.content if resp.output.message else []
    for b in blocks:
        if b.text is not None:
            texts.append(b.text)
        elif b.tool_use is not None and b.tool_use.name == STRUCTURED_OUTPUT_TOOL:
            texts = [dumps(b.tool_use.input if b.tool_use.input is not None else {})]
            structured = True
        elif b.tool_use is not None:
            tu = b.tool_use
            calls.append(
                ToolCall(
                    id=tu.tool_use_id,
                    function=FunctionCall(
                        name=tu.name, arguments=dumps(tu.input if tu.input is not None else {})
                    ),
                )
            )
        elif b.reasoning_content is not None:
            if b.reasoning_content.reasoning_text is not None:
                reasoning.append(b.reasoning_content.reasoning_text.text)
        else:
            log.warning("bedrock: skipped a content block of an unknown kind")
    signed = [
        b.reasoning_content.reasoning_text.signature
        for b in blocks
        if b.reasoning_content
        and b.reasoning_content.reasoning_text
        and b.reasoning_content.reasoning_text.signature
    ]
    redacted = any(b.reasoning_content and b.reasoning_content.redacted_content for b in blocks)
    if calls and len(signed) == 1 and not redacted:
        calls[0].id = signatures.join(calls[0].id, signed[0])
    reason = finish_reason(resp.stop_reason)
    if structured and not calls and reason == "tool_calls":
        reason = "stop"
    content = "".join(texts)
    return ChatResponse(
        id=response_id,
        model=model,
        choices=[
            Choice(
                index=0,
                message=ResponseMessage(
                    content=content if (content or not calls) else None,
                    tool_calls=calls or None,
                    reasoning_content="".join(reasoning) or None,
                ),
                finish_reason=reason,
            )
        ],
        usage=usage(resp.usage),
    )
