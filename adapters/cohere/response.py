"""Cohere v2 chat / embed responses -> canonical."""

from __future__ import annotations

from adapters.canonical import (
    ChatResponse,
    Choice,
    Embedding,
    EmbeddingResponse,
    EmbeddingUsage,
    FunctionCall,
    ResponseMessage,
    ToolCall,
)
from adapters.cohere import wire as w
from adapters.cohere.mapping import finish_reason, log, usage
from adapters.wirekit.errors import bad_upstream


def to_canonical(resp: w.ChatResponse, model: str) -> ChatResponse:
    msg = resp.message or w.AssistantMessage()
    texts: list[str] = []
    thinking: list[str] = []
    for item in msg.content or []:
        if item.type == "text":
            texts.append(item.text or "")
        elif item.type == "thinking":
            thinking.append(item.thinking or "")
        else:
            log.warning("cohere: skipped content of unknown type %r", item.type)
    calls = [
        ToolCall(
            id=c.id or f"call_{i}",
            function=FunctionCall(
                name=(c.function.name if c.function else "") or "",
                arguments=(c.function.arguments if c.function else "") or "{}",
            ),
        )
        for i, c in enumerate(msg.tool_calls or [])
    ]
    # tool_plan is the model's reasoning about which tools to call.
    reasoning = "".join(thinking) + (msg.tool_plan or "")
    content = "".join(texts)
    return ChatResponse(
        id=resp.id,
        model=model,
        choices=[
            Choice(
                index=0,
                message=ResponseMessage(
                    content=content if (content or not calls) else None,
                    tool_calls=calls or None,
                    reasoning_content=reasoning or None,
                ),
                finish_reason=finish_reason(resp.finish_reason),
            )
        ],
        usage=usage(resp.usage),
    )


def embeddings(resp: w.EmbedResponse, model: str) -> EmbeddingResponse:
    vectors = resp.embeddings.get("float")
    if vectors is None:
        raise bad_upstream("cohere", "embed response has no float embeddings")
    tokens = int(resp.meta.billed_units.input_tokens) if resp.meta and resp.meta.billed_units else 0
    return EmbeddingResponse(
        data=[Embedding(index=i, embedding=[float(x) for x in v]) for i, v in enumerate(vectors)],
        model=model,
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
    )
