"""Fold a canonical chunk stream into the unary ChatResponse it stands for,
so streamed and unary traffic share one audit/accounting path."""

from __future__ import annotations

from collections.abc import Iterable

from adapters.canonical import ChatChunk, ChatResponse, Choice, FunctionCall, ResponseMessage, ToolCall, Usage


class _Acc:
    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.refusal: list[str] = []
        self.calls: dict[int, tuple[str, str, list[str]]] = {}  # index -> id, name, argument pieces
        self.finish: str | None = None
        self.role = "assistant"


def fold(chunks: Iterable[ChatChunk]) -> ChatResponse:
    rid, model, created = "", "", 0
    usage: Usage | None = None
    accs: dict[int, _Acc] = {}
    for ch in chunks:
        rid, model, created = rid or ch.id, model or ch.model, created or ch.created
        if ch.usage is not None:
            usage = ch.usage
        for c in ch.choices:
            acc = accs.setdefault(c.index, _Acc())
            d = c.delta
            if d.role:
                acc.role = d.role
            if d.content:
                acc.content.append(d.content)
            if d.reasoning_content:
                acc.reasoning.append(d.reasoning_content)
            if d.refusal:
                acc.refusal.append(d.refusal)
            for tc in d.tool_calls or []:
                cid, name, args = acc.calls.get(tc.index, ("", "", []))
                if tc.id:
                    cid = tc.id
                if tc.function is not None:
                    if tc.function.name:
                        name = tc.function.name
                    if tc.function.arguments:
                        args.append(tc.function.arguments)
                acc.calls[tc.index] = (cid, name, args)
            if c.finish_reason:
                acc.finish = c.finish_reason
    choices = []
    for index in sorted(accs):
        acc = accs[index]
        calls = [
            ToolCall(id=cid, function=FunctionCall(name=name, arguments="".join(args)))
            for _, (cid, name, args) in sorted(acc.calls.items())
        ]
        content = "".join(acc.content)
        choices.append(
            Choice(
                index=index,
                message=ResponseMessage(
                    role=acc.role,
                    content=content if (content or not calls) else None,
                    tool_calls=calls or None,
                    reasoning_content="".join(acc.reasoning) or None,
                    refusal="".join(acc.refusal) or None,
                ),
                finish_reason=acc.finish,
            )
        )
    return ChatResponse(id=rid, model=model, created=created, choices=choices, usage=usage)
