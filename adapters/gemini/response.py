"""Gemini GenerateContentResponse -> canonical ChatResponse."""

from __future__ import annotations

from adapters.canonical import ChatResponse, Choice, FunctionCall, ResponseMessage, ToolCall
from adapters.gemini import wire as w
from adapters.gemini.mapping import finish_reason, log, usage
from adapters.wirekit import signatures
from adapters.wirekit.jsonio import dumps


def call_id(part: w.Part, fc: w.FunctionCall, n: int) -> str:
    # Gemini often returns no call ids; a stable synthetic one lets the
    # caller's tool message point back at the call.
    return signatures.join(fc.id or f"call_{n}", part.thought_signature)


def choice(cand: w.Candidate) -> Choice:
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[ToolCall] = []
    for part in cand.content.parts if cand.content else []:
        if part.function_call is not None:
            fc = part.function_call
            calls.append(
                ToolCall(
                    id=call_id(part, fc, len(calls)),
                    function=FunctionCall(name=fc.name, arguments=dumps(fc.args or {})),
                )
            )
        elif part.text is not None:
            (thoughts if part.thought else texts).append(part.text)
        elif part.inline_data is None and part.file_data is None:
            log.warning("gemini: skipped a response part of an unknown kind")
    content = "".join(texts)
    return Choice(
        index=cand.index,
        message=ResponseMessage(
            content=content if (content or not calls) else None,
            tool_calls=calls or None,
            reasoning_content="".join(thoughts) or None,
        ),
        finish_reason=finish_reason(cand.finish_reason, bool(calls)),
    )


def to_canonical(resp: w.GenerateContentResponse, model: str) -> ChatResponse:
    choices = [choice(c) for c in resp.candidates]
    if not choices and resp.prompt_feedback and resp.prompt_feedback.block_reason:
        # The prompt itself was blocked: no candidates, only feedback.
        choices = [Choice(index=0, message=ResponseMessage(content=""), finish_reason="content_filter")]
    return ChatResponse(
        id=resp.response_id or "",
        model=resp.model_version or model,
        choices=choices,
        usage=usage(resp.usage_metadata),
    )
