"""Builders for canonical stream chunks, so every stream decoder emits the
same OpenAI-style sequence: a role chunk first, content/tool deltas, a chunk
carrying finish_reason, and a final usage chunk with no choices."""

from __future__ import annotations

from adapters.canonical import (
    ChatChunk,
    ChunkChoice,
    Delta,
    FunctionCallDelta,
    ToolCallDelta,
    Usage,
)


class ChunkFactory:
    def __init__(self, id: str = "", model: str = "", created: int = 0) -> None:
        self.id = id
        self.model = model
        self.created = created

    def delta(self, delta: Delta, finish_reason: str | None = None) -> ChatChunk:
        return ChatChunk(
            id=self.id,
            model=self.model,
            created=self.created,
            choices=[ChunkChoice(index=0, delta=delta, finish_reason=finish_reason)],
        )

    def role(self) -> ChatChunk:
        return self.delta(Delta(role="assistant", content=""))

    def text(self, text: str) -> ChatChunk:
        return self.delta(Delta(content=text))

    def reasoning(self, text: str) -> ChatChunk:
        return self.delta(Delta(reasoning_content=text))

    def tool_start(self, index: int, call_id: str, name: str, arguments: str = "") -> ChatChunk:
        return self.delta(
            Delta(
                tool_calls=[
                    ToolCallDelta(
                        index=index,
                        id=call_id,
                        type="function",
                        function=FunctionCallDelta(name=name, arguments=arguments),
                    )
                ]
            )
        )

    def tool_args(self, index: int, arguments: str) -> ChatChunk:
        return self.delta(
            Delta(tool_calls=[ToolCallDelta(index=index, function=FunctionCallDelta(arguments=arguments))])
        )

    def finish(self, reason: str) -> ChatChunk:
        return self.delta(Delta(), finish_reason=reason)

    def usage(self, usage: Usage) -> ChatChunk:
        return ChatChunk(id=self.id, model=self.model, created=self.created, choices=[], usage=usage)
